//! The value conventions of the JSON form (spec/JSON.md) both ways, shared by [`super::json`]
//! and the state records' form: hex, exact 64-bit integers, byte strings, and field access
//! that names the path of what is wrong.

use super::names;
use serde_json::{json, Map, Value};

pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(D[usize::from(x >> 4)]));
        s.push(char::from(D[usize::from(x & 15)]));
    }
    s
}

pub(crate) fn unhex(s: &str, what: &str) -> Result<Vec<u8>, String> {
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(format!("{what}: odd number of hex digits"));
    }
    b.chunks_exact(2)
        .map(|p| match (v(p[0]), v(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("{what}: not hex")),
        })
        .collect()
}

pub(crate) fn x(n: u64) -> Value {
    Value::String(format!("{n:#x}"))
}

/// The largest integer every JSON reader holds exactly (readers that use doubles, like jq and
/// JavaScript, round above it): 2^53 - 1.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// A 64-bit count or time: a JSON number up to [`MAX_EXACT`], a decimal string above, so that
/// no JSON tool can round it.
pub(crate) fn n64(n: u64) -> Value {
    if n <= MAX_EXACT {
        n.into()
    } else {
        Value::String(n.to_string())
    }
}

/// A kind as its name, or its number when it has none.
pub(crate) fn named(n: u64, table: names::Kinds) -> Value {
    match names::kind(n, table) {
        Some(s) => s.into(),
        None => n.into(),
    }
}

/// Bytes as a string when they are UTF-8 without NUL, else as hex.
pub(crate) fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) if !s.contains('\0') => Value::String(s.to_string()),
        _ => json!({ "hex": hex(b) }),
    }
}

/// A NUL-padded fixed field: its text up to the first NUL.
pub(crate) fn padded_value(b: &[u8]) -> Value {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    bytes_value(&b[..end])
}

/// Field access with the path in the error.
pub(crate) struct Obj<'a> {
    pub(crate) v: &'a Map<String, Value>,
    pub(crate) path: String,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(v: &'a Value, path: &str) -> Result<Self, String> {
        v.as_object()
            .map(|v| Obj {
                v,
                path: path.to_string(),
            })
            .ok_or_else(|| format!("{path}: expected an object"))
    }
    pub(crate) fn get(&self, k: &str) -> Result<&'a Value, String> {
        self.v
            .get(k)
            .ok_or_else(|| format!("{}.{k}: missing", self.path))
    }
    pub(crate) fn obj(&self, k: &str) -> Result<Obj<'a>, String> {
        Obj::new(self.get(k)?, &format!("{}.{k}", self.path))
    }
    pub(crate) fn u64(&self, k: &str) -> Result<u64, String> {
        int(self.get(k)?, &format!("{}.{k}", self.path))
    }
    pub(crate) fn n<T: TryFrom<u64>>(&self, k: &str) -> Result<T, String> {
        T::try_from(self.u64(k)?).map_err(|_| format!("{}.{k}: out of range", self.path))
    }
    pub(crate) fn bytes(&self, k: &str) -> Result<Vec<u8>, String> {
        bytes(self.get(k)?, &format!("{}.{k}", self.path))
    }
    pub(crate) fn hex(&self, k: &str) -> Result<Vec<u8>, String> {
        let p = format!("{}.{k}", self.path);
        unhex(
            self.get(k)?
                .as_str()
                .ok_or_else(|| format!("{p}: expected a hex string"))?,
            &p,
        )
    }
    /// A kind: its name in `table`, or a number.
    pub(crate) fn kind<T: TryFrom<u64>>(&self, k: &str, table: names::Kinds) -> Result<T, String> {
        let p = format!("{}.{k}", self.path);
        let n = match self.get(k)? {
            Value::String(s) => {
                names::parse_kind(s, table).ok_or_else(|| format!("{p}: unknown name {s:?}"))?
            }
            v => int(v, &p)?,
        };
        T::try_from(n).map_err(|_| format!("{p}: out of range"))
    }
    /// Flags: names of `table` and numbers joined by `|`, or a number.
    pub(crate) fn flags<T: TryFrom<u64>>(
        &self,
        k: &str,
        table: &[names::Flag],
    ) -> Result<T, String> {
        let p = format!("{}.{k}", self.path);
        let n = match self.get(k)? {
            Value::String(s) => names::parse_flags(s, table).map_err(|e| format!("{p}: {e}"))?,
            v => int(v, &p)?,
        };
        T::try_from(n).map_err(|_| format!("{p}: out of range"))
    }
    /// Memory protection: `rwx` letters, or a number.
    pub(crate) fn prot<T: TryFrom<u64>>(&self, k: &str) -> Result<T, String> {
        let p = format!("{}.{k}", self.path);
        let n = match self.get(k)? {
            Value::String(s) => match names::parse_prot(s) {
                Some(n) => n,
                None => int(&Value::String(s.clone()), &p)
                    .map_err(|_| format!("{p}: expected `rwx` letters, found {s:?}"))?,
            },
            v => int(v, &p)?,
        };
        T::try_from(n).map_err(|_| format!("{p}: out of range"))
    }
    pub(crate) fn arr(&self, k: &str) -> Result<&'a Vec<Value>, String> {
        self.get(k)?
            .as_array()
            .ok_or_else(|| format!("{}.{k}: expected an array", self.path))
    }
}

/// An unsigned integer: a JSON number up to [`MAX_EXACT`] (a larger one may have been rounded
/// by whatever tool wrote it, so it is refused rather than taken), or a string in decimal,
/// `0x…` or `0o…`.
pub(crate) fn int(v: &Value, path: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(u) if u <= MAX_EXACT => Ok(u),
            Some(_) => Err(format!(
                "{path}: {n} is above 2^53 - 1, where JSON tools round numbers: write it as a \
                 string (\"{n}\") to have it taken exactly"
            )),
            None => Err(format!("{path}: expected an unsigned integer, found {n}")),
        },
        Value::String(s) => {
            names::parse_int(s).ok_or_else(|| format!("{path}: expected an integer, found {s:?}"))
        }
        _ => Err(format!("{path}: expected an integer")),
    }
}

pub(crate) fn bytes(v: &Value, path: &str) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) => match o.get("hex").and_then(Value::as_str) {
            Some(h) => unhex(h, path),
            None => Err(format!("{path}: expected a string or {{\"hex\": ...}}")),
        },
        _ => Err(format!("{path}: expected a string")),
    }
}

pub(crate) fn padded<const N: usize>(v: &Value, path: &str) -> Result<[u8; N], String> {
    let b = bytes(v, path)?;
    let mut out = [0u8; N];
    if b.len() > N || b.contains(&0) {
        return Err(format!("{path}: at most {N} bytes, no NUL"));
    }
    out[..b.len()].copy_from_slice(&b);
    Ok(out)
}

pub(crate) fn ints<const N: usize, T: TryFrom<u64> + Copy + Default>(
    v: &Value,
    path: &str,
) -> Result<[T; N], String> {
    let a = v
        .as_array()
        .filter(|a| a.len() == N)
        .ok_or_else(|| format!("{path}: expected {N} integers"))?;
    let mut out = [T::default(); N];
    for (i, (o, e)) in out.iter_mut().zip(a).enumerate() {
        *o = T::try_from(int(e, &format!("{path}[{i}]"))?)
            .map_err(|_| format!("{path}[{i}]: out of range"))?;
    }
    Ok(out)
}

//! Credentials: the image's uids, gids, supplementary groups and capabilities, applied as the
//! last thing before the registers, so that the restored task never has more privilege than
//! the task that was checkpointed, nor more than the caller of `restore`.
//!
//! Before the fork ([`plan`]): a caller that cannot take the image's ids (without
//! `CAP_SETUID`, every recorded uid must be one of the caller's real, effective and saved uids;
//! the same for gids with `CAP_SETGID`; without `CAP_SETGID` the groups must be the caller's)
//! is refused, naming what differs. Capabilities are the image's intersected with the
//! caller's (a warning names those the caller does not have); a bounding set or securebits
//! that the caller would have to change without `CAP_SETPCAP` are refused.
//!
//! In the child ([`apply`], injected): `setgroups`, `setresgid`, `setfsgid`, the bounding-set
//! drops (`PR_CAPBSET_DROP`) and securebits while still privileged, `setresuid` (keeping the
//! permitted set across it with `SECBIT_KEEP_CAPS` when the task keeps capabilities as a
//! non-root user), `setfsuid`, `capset`, the ambient raises. Then `/proc/PID/status` of the
//! child is compared with the plan ([`verify`]): any difference fails the restore.

use super::child::Child;
use crate::error::{Error, Result};
use crate::sys::abi::nr;
use crate::sys::taskstate::{self as ts, pr, CapData, CapHeader};
use cr_format::raw;

/// `CAP_SETGID`.
pub(super) const CAP_SETGID: u32 = 6;
/// `CAP_SETUID`.
pub(super) const CAP_SETUID: u32 = 7;
/// `CAP_SETPCAP`.
pub(super) const CAP_SETPCAP: u32 = 8;
/// `CAP_SYS_ADMIN`.
pub(super) const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_SYS_RESOURCE`.
pub(super) const CAP_SYS_RESOURCE: u32 = 24;
/// `CAP_CHECKPOINT_RESTORE`.
pub(super) const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Where the groups go in the scratch area, and how many fit.
const GROUPS_AT: u64 = 4096;
const GROUPS_MAX: usize = 15 * 1024;

/// The credentials of a task as `/proc/PID/status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Creds {
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    /// Sorted.
    pub groups: Vec<u32>,
    pub inh: u64,
    pub prm: u64,
    pub eff: u64,
    pub bnd: u64,
    pub amb: u64,
}

impl Creds {
    /// Reads `/proc/PID/status` (`pid` 0: this process).
    pub fn of(pid: i32) -> Result<Creds> {
        let path = if pid == 0 {
            "/proc/self/status".to_string()
        } else {
            format!("/proc/{pid}/status")
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.clone(), e))?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| Error::Proc(format!("{path}: no {k}")))
        };
        let ids = |k: &str| -> Result<[u32; 4]> {
            let v: Vec<u32> = field(k)?
                .split_whitespace()
                .map(|x| x.parse().map_err(|_| Error::Proc(format!("{path}: {k}"))))
                .collect::<Result<_>>()?;
            v.try_into()
                .map_err(|_| Error::Proc(format!("{path}: {k} has not 4 ids")))
        };
        let hex = |k: &str| -> Result<u64> {
            u64::from_str_radix(field(k)?, 16).map_err(|_| Error::Proc(format!("{path}: {k}")))
        };
        let mut groups: Vec<u32> = field("Groups")?
            .split_whitespace()
            .map(|x| {
                x.parse()
                    .map_err(|_| Error::Proc(format!("{path}: Groups")))
            })
            .collect::<Result<_>>()?;
        groups.sort_unstable();
        groups.dedup();
        Ok(Creds {
            uid: ids("Uid")?,
            gid: ids("Gid")?,
            groups,
            inh: hex("CapInh")?,
            prm: hex("CapPrm")?,
            eff: hex("CapEff")?,
            bnd: hex("CapBnd")?,
            amb: hex("CapAmb")?,
        })
    }

    /// Whether `cap` is in the effective set.
    pub fn has(&self, cap: u32) -> bool {
        self.eff & (1u64 << cap) != 0
    }
}

/// What [`apply`] does.
#[derive(Clone, Debug, Default)]
pub(super) struct CredPlan {
    /// What the child has at the fork (the caller's).
    pub from: Creds,
    /// What it must have at the end.
    pub to: Creds,
    /// Securebits to set while privileged, if they change.
    pub securebits: Option<u32>,
    /// `SECBIT_KEEP_CAPS` set before `setresuid` (when the securebits do not change).
    pub keep_caps_bridge: bool,
    /// `SECBIT_KEEP_CAPS` to set at the end (`PR_SET_KEEPCAPS`), if it differs then.
    pub keep_caps_end: Option<bool>,
}

fn names(v: &[u32]) -> String {
    format!("{v:?}")
}

/// The image's ids, groups, bounding set, ambient set and securebits, checked against what
/// the caller may take.
struct Wanted {
    uid: [u32; 4],
    gid: [u32; 4],
    groups: Vec<u32>,
    bnd: u64,
    amb: u64,
    secure: u32,
}

/// The refusal of a restore whose credentials the caller cannot give, naming what differs.
fn refusal(me: &Creds, what: String) -> Error {
    Error::Other(format!(
        "restore refused: the checkpointed task ran with {what}; cr-dump runs as uids {} gids {} \
         and cannot take them (restore it as root, or as the user it ran as)",
        names(&me.uid),
        names(&me.gid)
    ))
}

fn wanted(
    task: &raw::Task,
    process: Option<(&raw::Process, Vec<u32>)>,
    me: &Creds,
    warnings: &mut Vec<String>,
) -> Result<Wanted> {
    let uid: [u32; 4] = task.uid.map(|u| u.get());
    let gid: [u32; 4] = task.gid.map(|u| u.get());
    let mine = |ids: &[u32; 4], v: u32| ids[..3].contains(&v);
    if !me.has(CAP_SETUID) && !uid.iter().all(|&u| mine(&me.uid, u)) {
        let what = format!("uids {} (no CAP_SETUID)", names(&uid));
        return Err(refusal(me, what));
    }
    if !me.has(CAP_SETGID) && !gid.iter().all(|&g| mine(&me.gid, g)) {
        let what = format!("gids {} (no CAP_SETGID)", names(&gid));
        return Err(refusal(me, what));
    }
    let w = match process {
        Some((p, mut groups)) => {
            groups.sort_unstable();
            groups.dedup();
            Wanted {
                uid,
                gid,
                groups,
                bnd: p.cap_bounding.get(),
                amb: p.cap_ambient.get(),
                secure: p.securebits.get(),
            }
        }
        None => {
            warnings.push(
                "the image (format 1.0) has no groups, bounding set, ambient set or securebits: \
                 the task gets cr-dump's"
                    .into(),
            );
            Wanted {
                uid,
                gid,
                groups: me.groups.clone(),
                bnd: me.bnd,
                amb: me.amb,
                secure: ts::own_securebits().unwrap_or(0),
            }
        }
    };
    if w.groups != me.groups && !me.has(CAP_SETGID) {
        let what = format!(
            "supplementary groups {} (cr-dump's are {}; no CAP_SETGID)",
            names(&w.groups),
            names(&me.groups)
        );
        return Err(refusal(me, what));
    }
    if w.groups.len() > GROUPS_MAX {
        return Err(Error::Other(format!(
            "restore refused: {} supplementary groups (this cr-dump restores at most {GROUPS_MAX})",
            w.groups.len()
        )));
    }
    Ok(w)
}

/// Checks that the caller may give the task the image's credentials and computes what the
/// task gets (the image's capabilities intersected with the caller's); refuses, before the
/// fork, when it may not.
pub(super) fn plan(
    task: &raw::Task,
    process: Option<(&raw::Process, Vec<u32>)>,
    me: &Creds,
    warnings: &mut Vec<String>,
) -> Result<CredPlan> {
    let w = wanted(task, process, me, warnings)?;
    let (inh_i, prm_i, eff_i) = (
        task.cap_inheritable.get(),
        task.cap_permitted.get(),
        task.cap_effective.get(),
    );
    let prm = prm_i & me.prm;
    let inh = inh_i & (me.inh | me.prm) & (me.inh | me.bnd);
    let eff = eff_i & prm;
    let lost = (prm_i & !prm) | (inh_i & !inh) | (eff_i & !eff);
    if lost != 0 {
        warnings.push(format!(
            "capabilities {lost:#x} of the checkpointed task are not restored: cr-dump does not \
             have them (the task never gets more than its caller)"
        ));
    }
    let bnd = w.bnd & me.bnd;
    if bnd != me.bnd && !me.has(CAP_SETPCAP) {
        let what = format!(
            "bounding set {:#x} (cr-dump's is {:#x}; dropping needs CAP_SETPCAP)",
            w.bnd, me.bnd
        );
        return Err(refusal(me, what));
    }
    let secure = w.secure;
    let own_secure = ts::own_securebits().unwrap_or(0);
    let keep = ts::SECBIT_KEEP_CAPS;
    let secure_change = secure & !keep != own_secure & !keep;
    if secure_change && !me.has(CAP_SETPCAP) {
        let what = format!(
            "securebits {secure:#x} (cr-dump's are {own_secure:#x}; setting needs CAP_SETPCAP)"
        );
        return Err(refusal(me, what));
    }
    let was_root = me.uid[..3].contains(&0);
    let stays_root = w.uid[..3].contains(&0);
    // setresuid from root to non-root clears the permitted set unless SECBIT_KEEP_CAPS.
    let mut bridge = was_root && !stays_root && prm != 0 && secure & keep == 0;
    if bridge && secure & ts::SECBIT_KEEP_CAPS_LOCKED != 0 {
        warnings.push(format!(
            "permitted capabilities {prm:#x} cannot be kept across the change to uid {}: the \
             image's securebits lock SECBIT_KEEP_CAPS off",
            w.uid[1]
        ));
        bridge = false;
    }
    let kept = !was_root || stays_root || bridge || secure & keep != 0;
    let prm = if kept { prm } else { 0 };
    let mut amb = w.amb & prm & inh;
    if amb != 0 && secure & ts::SECBIT_NO_CAP_AMBIENT_RAISE != 0 {
        warnings.push(format!(
            "ambient capabilities {amb:#x} are not restored: the image's securebits forbid \
             raising them"
        ));
        amb = 0;
    }
    let securebits = secure_change.then_some(secure | if bridge { keep } else { 0 });
    let keep_now = (if secure_change { secure } else { own_secure }) & keep != 0 || bridge;
    let keep_want = secure & keep != 0;
    Ok(CredPlan {
        from: me.clone(),
        to: Creds {
            uid: w.uid,
            gid: w.gid,
            groups: w.groups,
            inh,
            prm,
            eff: eff & prm,
            bnd,
            amb,
        },
        securebits,
        keep_caps_bridge: bridge && !secure_change,
        keep_caps_end: (keep_now != keep_want).then_some(keep_want),
    })
}

/// Applies `cp` in the child (see the module docs). `scratch` holds what is passed by pointer.
pub(super) fn apply(c: &Child, scratch: u64, cp: &CredPlan) -> Result<()> {
    let (from, to) = (&cp.from, &cp.to);
    let ids = |v: &[u32; 4]| [v[0].into(), v[1].into(), v[2].into(), 0, 0, 0];
    if to.groups != from.groups {
        let b: Vec<u8> = to.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        c.write(scratch + GROUPS_AT, &b)?;
        let args = [to.groups.len() as u64, scratch + GROUPS_AT, 0, 0, 0, 0];
        c.call_ok("setgroups", ts::nr::SETGROUPS, args)?;
    }
    if to.gid != from.gid {
        c.call_ok("setresgid", ts::nr::SETRESGID, ids(&to.gid))?;
        c.call_ok(
            "setfsgid",
            ts::nr::SETFSGID,
            [to.gid[3].into(), 0, 0, 0, 0, 0],
        )?;
    }
    for cap in (0..64u64).filter(|&b| from.bnd & !to.bnd & (1 << b) != 0) {
        let args = [pr::CAPBSET_DROP, cap, 0, 0, 0, 0];
        c.call_ok(&format!("PR_CAPBSET_DROP({cap})"), nr::PRCTL, args)?;
    }
    if let Some(bits) = cp.securebits {
        let args = [pr::SET_SECUREBITS, bits.into(), 0, 0, 0, 0];
        c.call_ok("PR_SET_SECUREBITS", nr::PRCTL, args)?;
    } else if cp.keep_caps_bridge {
        c.call_ok(
            "PR_SET_KEEPCAPS",
            nr::PRCTL,
            [pr::SET_KEEPCAPS, 1, 0, 0, 0, 0],
        )?;
    }
    if to.uid != from.uid {
        c.call_ok("setresuid", ts::nr::SETRESUID, ids(&to.uid))?;
        c.call_ok(
            "setfsuid",
            ts::nr::SETFSUID,
            [to.uid[3].into(), 0, 0, 0, 0, 0],
        )?;
    }
    let hdr = CapHeader {
        version: ts::CAP_VERSION_3,
        pid: 0,
    };
    c.write_struct(scratch, &hdr)?;
    c.write_struct(scratch + 64, &CapData::new(to.eff, to.prm, to.inh))?;
    c.call_ok(
        "capset",
        ts::nr::CAPSET,
        [scratch, scratch + 64, 0, 0, 0, 0],
    )?;
    for cap in (0..64u64).filter(|&b| to.amb & (1 << b) != 0) {
        let args = [pr::CAP_AMBIENT, pr::CAP_AMBIENT_RAISE, cap, 0, 0, 0];
        c.call_ok(&format!("PR_CAP_AMBIENT_RAISE({cap})"), nr::PRCTL, args)?;
    }
    if let Some(k) = cp.keep_caps_end {
        let args = [pr::SET_KEEPCAPS, k.into(), 0, 0, 0, 0];
        c.call_ok("PR_SET_KEEPCAPS", nr::PRCTL, args)?;
    }
    Ok(())
}

/// Fails unless the child's credentials are those of the plan.
pub(super) fn verify(pid: i32, cp: &CredPlan) -> Result<()> {
    let now = Creds::of(pid)?;
    if now != cp.to {
        return Err(Error::Other(format!(
            "the restored task's credentials are {now:?}, not the planned {:?}",
            cp.to
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn task(uid: u32, prm: u64) -> raw::Task {
        let mut t = raw::Task::new_zeroed();
        t.uid = [uid.into(); 4];
        t.gid = [uid.into(); 4];
        t.cap_permitted = prm.into();
        t.cap_effective = prm.into();
        t
    }

    fn who(uid: u32, caps: u64) -> Creds {
        Creds {
            uid: [uid; 4],
            gid: [uid; 4],
            prm: caps,
            eff: caps,
            bnd: u64::MAX >> 24,
            ..Creds::default()
        }
    }

    #[test]
    fn root_gives_a_user_their_own_credentials() {
        let mut w = Vec::new();
        let root = who(0, u64::MAX >> 24);
        let p = plan(&task(1000, 0), None, &root, &mut w).expect("plan");
        assert_eq!(p.to.uid, [1000; 4]);
        assert_eq!((p.to.prm, p.to.eff), (0, 0));
        assert!(!p.keep_caps_bridge);
        // A user's task with a capability keeps it across the change of uid.
        let p = plan(&task(1000, 1 << 10), None, &root, &mut w).expect("plan");
        assert_eq!((p.to.prm, p.to.eff), (1 << 10, 1 << 10));
        assert!(p.keep_caps_bridge || p.securebits.is_some_and(|b| b & 16 != 0));
    }

    #[test]
    fn a_user_cannot_take_roots_or_more_than_its_own() {
        let mut w = Vec::new();
        let user = who(1000, 0);
        let e = plan(&task(0, 0), None, &user, &mut w).expect_err("refused");
        assert!(e.to_string().contains("uids [0, 0, 0, 0]"), "{e}");
        let e = plan(&task(1001, 0), None, &user, &mut w).expect_err("refused");
        assert!(e.to_string().contains("no CAP_SETUID"), "{e}");
        // Its own image with capabilities it no longer has: restored without them.
        w.clear();
        let p = plan(&task(1000, 1 << 10), None, &user, &mut w).expect("plan");
        assert_eq!(p.to.prm, 0);
        assert!(w.iter().any(|l| l.contains("capabilities 0x400")), "{w:?}");
    }
}

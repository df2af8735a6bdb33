//! `cr-dump man [VERB]`: the man page of cr-dump, or of one verb (`cr-dump-show(1)`), in roff:
//! clap_mangen's sections from the `--help` text, then EXIT STATUS, EXAMPLES and SEE ALSO,
//! written here.

use clap::CommandFactory;
use std::io::Write;

/// What each verb's exit status means, and examples: (verb, exit status, [(what, command)]).
type Page = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const COMMON_EXIT: &str = "0: done. 1: the image or the task failed a check, or an operation \
    failed (the message on standard error says what, on which file, and the byte offset where \
    it applies). 2: usage error.";

const PAGES: &[Page] = &[
    (
        "checkpoint",
        "0: the image was written. 1: the task could not be checkpointed (the message says why; \
         the task is left running as it was) or, with --strict, a state item would not be \
         restored exactly. 2: usage error. 128+N: interrupted by signal N (SIGINT, SIGTERM, \
         SIGHUP, SIGQUIT): the task was let go as it was and nothing was written.",
        &[
            ("Checkpoint process 4242 into app.img.CRID:", "cr-dump checkpoint --pid 4242 -o app.img"),
            ("Start a command, let it run 2 s, checkpoint it:", "cr-dump checkpoint --after 2 -o app.img -- ./server --port 8080"),
        ],
    ),
    (
        "show",
        COMMON_EXIT,
        &[
            ("The image as text, with the task's files, signals, timers and limits:", "cr-dump show app.img.7"),
            ("Every field and every record with its offset:", "cr-dump show -v app.img.7"),
            ("The JSON form (spec/JSON.md), read from a pipe:", "ssh host cat app.img.7 | cr-dump show --json -"),
        ],
    ),
    (
        "encode",
        COMMON_EXIT,
        &[(
            "Edit an image through its JSON form:",
            "cr-dump show --json --with-pages app.img.7 > app.json; $EDITOR app.json; cr-dump encode app.json -o app.img.8",
        )],
    ),
    (
        "verify",
        "0: every check holds. 1: a check failed (each problem on standard error, or one JSON \
         object on standard output with --json). 2: usage error.",
        &[
            ("Check an image and its chain of parents:", "cr-dump verify --chain app.img.9"),
            ("List every damaged record, as JSON:", "cr-dump verify --all --json app.img.9"),
            ("Check an image arriving on a pipe:", "curl -s https://host/app.img.9 | cr-dump verify -"),
        ],
    ),
    (
        "extract",
        COMMON_EXIT,
        &[(
            "64 bytes at 0x601000, through the chain, as a hexdump:",
            "cr-dump extract app.img.9 --addr 0x601000 --len 64 --hex",
        )],
    ),
    (
        "diff",
        "As diff(1): 0: the images hold the same task state (their identity, CRID, creation \
         time, producer, parent, digest and length, may differ and is listed). 1: they differ. \
         2: trouble (an image cannot be read or is invalid).",
        &[
            ("What changed between two checkpoints:", "cr-dump diff app.img.3 app.img.4"),
            ("Only whether it changed:", "cr-dump diff app.img.3 app.img.4 > /dev/null && echo same"),
        ],
    ),
    (
        "core",
        COMMON_EXIT,
        &[(
            "An ELF core file for gdb:",
            "cr-dump core app.img.9 -o app.core; gdb ./server app.core",
        )],
    ),
    (
        "chain",
        COMMON_EXIT,
        &[("The images of a chain, newest first:", "cr-dump chain app.img.9")],
    ),
    (
        "squash",
        COMMON_EXIT,
        &[(
            "Fold a chain into one full image:",
            "cr-dump squash app.img.9 -o app-full.img",
        )],
    ),
    (
        "restore",
        "Without --detach, the restored task's own exit status (128+N if signal N ended it). With \
         --detach, 0 once it runs. 1: the image cannot be restored here (the message says what \
         changed; checked before anything starts when it can be). 2: usage error.",
        &[("Restart a task from its image:", "cr-dump restore app.img.9")],
    ),
    (
        "completions",
        COMMON_EXIT,
        &[(
            "Bash completion for the current shell:",
            "source <(cr-dump completions bash)",
        )],
    ),
    (
        "man",
        COMMON_EXIT,
        &[("Read the page of one verb:", "cr-dump man show | man -l -")],
    ),
];

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Writes the page of `verb` (or of cr-dump itself) to `w`.
pub(crate) fn render(verb: Option<&str>, w: &mut dyn Write) -> Result<(), String> {
    let root = crate::args::Cli::command();
    let verbs: Vec<String> = root
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    let (cmd, exit, examples) = match verb {
        None => (root.clone(), COMMON_EXIT, &[][..]),
        Some(v) => {
            let sub = root
                .find_subcommand(v)
                .ok_or_else(|| format!("no verb {v:?}: the verbs are {}", verbs.join(", ")))?;
            let (_, exit, ex) =
                PAGES
                    .iter()
                    .find(|(n, _, _)| *n == v)
                    .copied()
                    .unwrap_or((v, COMMON_EXIT, &[]));
            let c = sub
                .clone()
                .display_name(format!("cr-dump-{v}"))
                .bin_name(format!("cr-dump {v}"));
            (c, exit, ex)
        }
    };
    let man = clap_mangen::Man::new(cmd);
    let io = |e: std::io::Error| format!("writing the man page: {e}");
    man.render(w).map_err(io)?;
    let mut t = String::new();
    t.push_str(".SH \"EXIT STATUS\"\n");
    for part in exit.split(". ") {
        t.push_str(&format!(".PP\n{}\n", roff(part.trim_end_matches('.'))));
    }
    if verb.is_none() {
        t.push_str(".PP\ndiff exits 1 when the images differ and 2 on trouble, as diff(1).\n");
    }
    if !examples.is_empty() {
        t.push_str(".SH EXAMPLES\n");
        for (what, cmd) in examples {
            t.push_str(&format!(
                ".PP\n{}\n.PP\n.RS 4\n\\fB{}\\fR\n.RE\n",
                roff(what),
                roff(cmd)
            ));
        }
    }
    t.push_str(".SH \"SEE ALSO\"\n");
    let see: Vec<String> = std::iter::once("cr\\-dump(1)".to_string())
        .filter(|_| verb.is_some())
        .chain(
            verbs
                .iter()
                .filter(|v| Some(v.as_str()) != verb)
                .map(|v| format!("cr\\-dump\\-{}(1)", roff(v))),
        )
        .collect();
    t.push_str(&format!(".PP\n{}\n", see.join(", ")));
    w.write_all(t.as_bytes()).map_err(io)
}

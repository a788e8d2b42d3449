//! The layering rules of ARCHITECTURE.md, checked on every test run by `scripts/check-imports`: no
//! import circle between the modules of src/ (among the top-level ones, and among the files of each),
//! no SQL or rusqlite outside src/store/, and a share's status set only by `store::transition`. The checker itself is shown to fail on each kind of breach,
//! on a copy of src/ (so a checker that passes everything cannot hide here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(root: &Path) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/check-imports"))
        .arg(root)
        .output()
        .expect("python3 runs scripts/check-imports: install it (apt-get install python3)")
}

/// A copy of src/ in a temporary folder, with `breach` appended to the file `file` of it.
fn copy_with(file: &str, breach: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut pending = vec![repo().join("src")];
    let mut copied = 0;
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let to = dir.path().join(p.strip_prefix(repo()).unwrap());
            if p.is_dir() {
                std::fs::create_dir_all(&to).unwrap();
                pending.push(p);
            } else {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&p, &to).unwrap();
                copied += 1;
            }
            assert!(copied < 10_000, "src/ holds more files than expected");
        }
    }
    let target = dir.path().join(file);
    let mut text = std::fs::read_to_string(&target).unwrap();
    text.push_str(breach);
    std::fs::write(&target, text).unwrap();
    dir
}

#[test]
fn the_layering_rules_hold() {
    let out = check(&repo());
    assert!(
        out.status.success(),
        "scripts/check-imports failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_checker_finds_each_kind_of_breach() {
    let cases = [
        (
            "src/domain.rs",
            "\n#[allow(unused_imports)]\nuse crate::workflow::Origin;\n",
            "import circle",
        ),
        (
            "src/api/health.rs",
            "\nconst _Q: &str = \"SELECT id FROM shares\";\n",
            "holds SQL text",
        ),
        (
            "src/worker.rs",
            "\nfn _f(c: &rusqlite::Connection) {}\n",
            "names rusqlite",
        ),
        (
            "src/workflow.rs",
            "\nconst _U: &str = \"UPDATE shares SET status = 'active'\";\n",
            "a share's status is set in",
        ),
        // A circle between the files of one module (store/postgres.rs uses store/db.rs).
        (
            "src/store/db.rs",
            "\n#[allow(unused_imports)]\nuse super::postgres::redact as _r;\n",
            "import circle: store::db <-> store::postgres",
        ),
        // The forms a line-by-line `crate::x` match would miss.
        (
            "src/domain.rs",
            "\n#[allow(unused_imports)]\nuse crate::{app::App as _A};\n",
            "import circle",
        ),
        (
            "src/domain.rs",
            "\nmod m {\n    #[allow(unused_imports)]\n    use super::super::app as _a;\n}\n",
            "import circle",
        ),
        (
            "src/app.rs",
            "\nconst _L: &str = \"update shares set updated_at = 1, status = 1\";\n",
            "holds SQL text",
        ),
    ];
    for (file, breach, expected) in cases {
        let copy = copy_with(file, breach);
        let out = check(copy.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{file}: expected a failure naming {expected:?}, got {:?}: {stderr}",
            out.status
        );
    }
}

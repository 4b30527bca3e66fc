//! `ARCHITECTURE.md` is true of the code: its layer table matches the `crate::` paths each
//! module uses, its state diagram matches `domain::MOVES`, and no file under `src/` is over
//! 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use remotask::domain::{JobState, MOVES};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The top-level modules that `module`'s files name as `crate::<module>`.
fn used_by(module: &str) -> BTreeSet<String> {
    let src = root().join("src");
    let files = if src.join(module).is_dir() {
        sources(&src.join(module))
    } else {
        vec![src.join(format!("{module}.rs"))]
    };
    let mut used = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                used.insert(name);
            }
        }
    }
    used
}

#[test]
fn each_module_uses_only_the_modules_its_row_of_the_layer_table_lists() {
    let doc = architecture();
    let table = doc
        .split("| module | may use |")
        .nth(1)
        .expect("the layer table");
    let mut rows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in table.lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_owned();
        let allowed = cells[2]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        rows.insert(module, allowed);
    }
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        modules,
        "the table has a row per module of src/lib.rs"
    );
    for (module, allowed) in &rows {
        assert_eq!(
            &used_by(module),
            allowed,
            "the modules `{module}` uses (left) against its row of the layer table"
        );
    }
}

#[test]
fn the_state_diagram_is_the_table_of_moves() {
    let doc = architecture();
    let diagram = doc
        .split("```mermaid")
        .nth(1)
        .and_then(|d| d.split("```").next())
        .expect("the state diagram");
    let node = |s: &str| -> Option<JobState> {
        match s {
            "[*]" => None,
            state => Some(state.parse().unwrap()),
        }
    };
    let drawn: BTreeSet<(Option<JobState>, String, Option<JobState>)> = diagram
        .lines()
        .filter_map(|l| {
            let (arrow, event) = l.trim().split_once(" : ")?;
            let (from, to) = arrow.split_once(" --> ")?;
            Some((node(from), event.to_owned(), node(to)))
        })
        .collect();
    let table: BTreeSet<(Option<JobState>, String, Option<JobState>)> = MOVES
        .iter()
        .map(|m| (m.from, m.event.to_string(), m.to))
        .collect();
    assert_eq!(drawn, table);
}

#[test]
fn no_file_under_src_is_over_800_lines() {
    for file in sources(&root().join("src")) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 800, "{} has {lines} lines", file.display());
    }
}

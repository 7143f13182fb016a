//! A packed file is a model: `qwenmk pack -o FILE` then `qwenmk generate -m FILE` on "another
//! machine" (an empty cache, no checkpoint, no network), and `qwenmk ls` / `qwenmk rm` over
//! qwenmk's cache.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Sandbox, assert_success, ids, reference_case, split_json, stderr, stdout};

fn assert_fails(output: &Output, phrases: &[&str]) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    for phrase in phrases {
        assert!(
            err.contains(phrase),
            "stderr should contain {phrase:?}:\n{err}"
        );
    }
    err
}

/// `qwenmk pack -m <copy of fixture> -o <dir>/name`, returning the file.
fn pack_to(sandbox: &Sandbox, fixture: &str, out: &Path) -> std::path::PathBuf {
    let model = sandbox.copy_fixture(fixture);
    let output = sandbox.qwenmk(&[
        "pack",
        "-m",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = assert_success(&output);
    assert!(
        err.contains("carries:") && err.contains("tokenizer.json"),
        "{err}"
    );
    assert_eq!(stdout(&output).trim(), out.display().to_string());
    out.to_path_buf()
}

#[test]
fn a_packed_file_runs_alone_on_another_machine() {
    // Machine one packs a checkpoint into a file of the user's choosing.
    let packer = Sandbox::new();
    let packed = pack_to(&packer, "tiny-gqa2", &packer.hf_home().join("tiny.qwenmk"));

    // Machine two has that file only: an empty cache, no checkpoint, no network.
    let runner = Sandbox::new();
    let file = runner.hf_home().join("model.qwenmk");
    std::fs::copy(&packed, &file).unwrap();
    drop(packer);
    for case in ["chat-haiku", "raw-france"] {
        let case = reference_case("tiny-gqa2", case);
        let n = case.generated_ids.len().min(24).to_string();
        let mut args = vec![
            "generate",
            "-m",
            file.to_str().unwrap(),
            "--device",
            "cpu",
            "--json",
            "--ignore-eos",
            // The fixture's generation_config.json samples; the references are greedy.
            "--temp",
            "0",
            "-n",
            &n,
        ];
        let prompt_args = case.prompt_args();
        args.extend(prompt_args.iter().map(String::as_str));
        let output = runner.qwenmk(&args);
        let err = assert_success(&output);
        assert!(!err.contains("packing"), "nothing is packed again: {err}");
        let (_, json) = split_json(&output);
        assert_eq!(
            ids(&json["prompt_tokens"]),
            case.prompt_ids,
            "{}",
            case.name
        );
        assert_eq!(
            ids(&json["tokens"]),
            case.generated_ids[..24.min(case.generated_ids.len())],
            "{}",
            case.name
        );
    }
    assert!(
        runner.packed_files().is_empty(),
        "a packed file given with -m is used in place, not copied into the cache"
    );
}

#[test]
fn files_that_are_not_models_get_a_sentence() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    // A safetensors file is not a model on its own.
    let weights = model.join("model.safetensors");
    let output = sandbox.qwenmk(&["generate", "-m", weights.to_str().unwrap(), "Hi"]);
    assert_fails(
        &output,
        &["is a file but not a qwenmk packed model", ".qwenmk"],
    );

    // A packed file of the older format.
    let packed = pack_to(&sandbox, "tiny-gqa2", &sandbox.hf_home().join("m.qwenmk"));
    let mut bytes = std::fs::read(&packed).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let old = sandbox.hf_home().join("old.qwenmk");
    std::fs::write(&old, &bytes).unwrap();
    let output = sandbox.qwenmk(&["generate", "-m", old.to_str().unwrap(), "Hi"]);
    assert_fails(&output, &["older qwenmk", "re-run `qwenmk pack`"]);

    // Packing a packed file.
    let output = sandbox.qwenmk(&["pack", "-m", packed.to_str().unwrap()]);
    assert_fails(&output, &["already a packed model", "qwenmk generate -m"]);

    // A checkpoint without a tokenizer cannot make a file that runs alone.
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let out = sandbox.hf_home().join("no-tok.qwenmk");
    let output = sandbox.qwenmk(&[
        "pack",
        "-m",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails(&output, &["has no tokenizer.json", "runs on its own"]);
    assert!(!out.exists());
}

/// `qwenmk generate` over a copied fixture, which packs it into the cache.
fn generate_from(sandbox: &Sandbox, model: &Path) {
    let output = sandbox.qwenmk(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "-n",
        "1",
        "--raw",
        "Hi",
    ]);
    assert_success(&output);
}

#[test]
fn ls_shows_the_cache_and_rm_removes_by_name_and_stale() {
    let sandbox = Sandbox::new();
    let output = sandbox.qwenmk(&["ls"]);
    assert!(assert_success(&output).contains("no packed models"));

    let model = sandbox.copy_fixture("tiny-gqa2");
    generate_from(&sandbox, &model);
    let first = sandbox.packed_file();
    let first_name = first.file_name().unwrap().to_str().unwrap().to_owned();

    let output = sandbox.qwenmk(&["ls"]);
    let err = assert_success(&output);
    let table = stdout(&output);
    assert!(table.starts_with("NAME"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&first_name))
        .expect("a row");
    let canonical = model.canonicalize().unwrap();
    assert!(row.contains(&canonical.display().to_string()), "{row}");
    assert!(
        row.contains("MB") && row.trim_end().ends_with("ok"),
        "{row}"
    );
    assert!(err.contains("1 packed model"), "{err}");

    // The source changes: the cached pack is stale, and the next run packs a new one.
    let tokenizer_config = model.join("tokenizer_config.json");
    let mut text = std::fs::read_to_string(&tokenizer_config).unwrap();
    text.push('\n');
    std::fs::write(&tokenizer_config, text).unwrap();
    let output = sandbox.qwenmk(&["ls", "--json"]);
    assert_success(&output);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(rows[0]["stale"], true, "{rows}");
    assert!(
        rows[0]["status"]
            .as_str()
            .unwrap()
            .contains("changed since"),
        "{rows}"
    );
    generate_from(&sandbox, &model);
    assert_eq!(sandbox.packed_files().len(), 2);

    // A file of an older format in the cache is stale too.
    let old = sandbox.packed_dir().join("old-format.qwenmk");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&old, &bytes).unwrap();

    let output = sandbox.qwenmk(&["rm", "--stale", "--dry-run"]);
    assert_success(&output);
    let said = stdout(&output);
    assert!(
        said.contains("would remove old-format.qwenmk (older packed format 1"),
        "{said}"
    );
    assert!(
        said.contains(&format!("would remove {first_name}")),
        "{said}"
    );
    assert_eq!(sandbox.packed_files().len(), 3, "a dry run removes nothing");

    let output = sandbox.qwenmk(&["rm", "--stale"]);
    assert_success(&output);
    let left = sandbox.packed_file();
    assert_ne!(left, first);

    // By name, without the extension; an unknown name is a sentence.
    let output = sandbox.qwenmk(&["rm", "no-such-model"]);
    assert_fails(&output, &["no packed model", "qwenmk ls"]);
    let stem = left.file_stem().unwrap().to_str().unwrap();
    let output = sandbox.qwenmk(&["rm", stem]);
    assert_success(&output);
    assert!(sandbox.packed_files().is_empty());
    let output = sandbox.qwenmk(&["rm"]);
    assert_eq!(output.status.code(), Some(2), "NAME or --stale is required");
}

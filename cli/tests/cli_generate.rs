//! `qwenmk generate` and `qwenmk pack` end to end: the real binary on the tiny fixtures must
//! reproduce Hugging Face's greedy tokens (`reference.json`), stream exactly the text it reports,
//! pack on first use, reuse the packed file afterwards and recover from a damaged one.

mod common;

use std::path::Path;

use common::{Sandbox, assert_success, fixture, ids, reference_case, reference_cases, split_json};
use qwenmk_weights::PackedModel;

const TOKENS: usize = 40;

/// Runs one reference case and checks prompt ids, generated ids, the streamed text and the stats.
fn check_case(sandbox: &Sandbox, checkpoint: &str, case: &str, device: &str, n: usize) {
    let case = reference_case(checkpoint, case);
    let model = fixture(checkpoint);
    let n_text = n.to_string();
    let mut args = vec![
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        device,
        "--json",
        "--ignore-eos",
        "-n",
        &n_text,
    ];
    let prompt_args = case.prompt_args();
    args.extend(prompt_args.iter().map(String::as_str));
    let output = sandbox.qwenmk(&args);
    let stderr = assert_success(&output);
    let (text, json) = split_json(&output);

    let label = format!("{checkpoint}/{} on {device}", case.name);
    assert_eq!(
        ids(&json["prompt_tokens"]),
        case.prompt_ids,
        "{label}: prompt ids"
    );
    assert_eq!(
        ids(&json["tokens"]),
        case.generated_ids[..n],
        "{label}: generated ids"
    );
    assert_eq!(
        json["text"].as_str(),
        Some(text.as_str()),
        "{label}: streamed text"
    );
    assert!(!text.is_empty(), "{label}: some text was generated");

    let stats = &json["stats"];
    assert_eq!(stats["engine"], device, "{label}: {stats}");
    assert_eq!(stats["prompt_tokens"], case.prompt_ids.len(), "{label}");
    assert_eq!(stats["generated_tokens"], n, "{label}");
    assert_eq!(stats["stop_reason"], "length", "{label}");
    for key in ["prefill_s", "ttft_s", "decode_s", "tokens_per_s"] {
        assert!(
            stats[key].as_f64().is_some_and(|v| v > 0.0),
            "{label}: stats.{key} = {}",
            stats[key]
        );
    }
    assert!(
        stderr.contains(device),
        "{label}: stats on stderr: {stderr}"
    );
}

#[test]
fn cpu_reproduces_every_reference_case() {
    for checkpoint in ["tiny-gqa2", "tiny-gqa4"] {
        let sandbox = Sandbox::new();
        let cases = reference_cases(checkpoint);
        assert_eq!(cases.len(), 4, "{checkpoint}: the four documented cases");
        for case in &cases {
            check_case(&sandbox, checkpoint, &case.name, "cpu", TOKENS);
        }
        // All four runs shared one packed file.
        sandbox.packed_file();
    }
}

#[test]
fn emulator_reproduces_a_chat_case() {
    let sandbox = Sandbox::new();
    check_case(&sandbox, "tiny-gqa2", "chat-haiku", "emulator", 20);
}

#[test]
fn auto_falls_back_to_the_cpu_with_a_notice() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "-n",
        "3",
        "--raw",
        "The capital of France is",
    ]);
    let stderr = assert_success(&output);
    let (_, json) = split_json(&output);
    if json["stats"]["engine"] == "cpu" {
        assert!(
            stderr.contains("running on the CPU"),
            "the fallback is announced: {stderr}"
        );
    }
    let want = reference_case("tiny-gqa2", "raw-france").generated_ids;
    assert_eq!(ids(&json["tokens"]), want[..3]);
}

/// The packed file's modification time.
fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("the packed file's mtime")
}

fn generate_france(sandbox: &Sandbox, model: &Path, n: usize) -> (std::process::Output, String) {
    let n = n.to_string();
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--ignore-eos",
        "-n",
        &n,
        "--raw",
        "The capital of France is",
    ]);
    let stderr = assert_success(&output);
    (output, stderr)
}

#[test]
fn generate_packs_on_first_use_and_reuses_the_file() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    assert!(sandbox.packed_files().is_empty());

    let (_, first) = generate_france(&sandbox, &model, 3);
    assert!(first.contains("packing"), "first use packs: {first}");
    let packed = sandbox.packed_file();
    assert!(packed.starts_with(sandbox.packed_dir()));
    PackedModel::open(&packed).expect("the cached file is valid");
    let before = mtime(&packed);

    std::thread::sleep(std::time::Duration::from_millis(20));
    let (output, second) = generate_france(&sandbox, &model, 3);
    assert!(
        !second.contains("packing"),
        "the second run reuses: {second}"
    );
    assert_eq!(sandbox.packed_file(), packed);
    assert_eq!(mtime(&packed), before, "the packed file was not rewritten");
    let (_, json) = split_json(&output);
    let want = reference_case("tiny-gqa2", "raw-france").generated_ids;
    assert_eq!(ids(&json["tokens"]), want[..3]);
}

#[test]
fn a_damaged_packed_file_is_reported_and_packed_again() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let want = reference_case("tiny-gqa2", "raw-france").generated_ids;
    generate_france(&sandbox, &model, 2);
    let packed = sandbox.packed_file();

    // 1. One flipped bit in the middle of the payload (the embedding): the checksum catches it.
    let mut bytes = std::fs::read(&packed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&packed, &bytes).unwrap();
    assert!(PackedModel::open(&packed).is_err());
    let (output, stderr) = generate_france(&sandbox, &model, 5);
    assert!(
        stderr.contains("unusable") && stderr.contains("corrupt"),
        "the damage is reported: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("unusable")).count(),
        1,
        "in one line: {stderr}"
    );
    let (_, json) = split_json(&output);
    assert_eq!(ids(&json["tokens"]), want[..5]);
    PackedModel::open(&sandbox.packed_file()).expect("packed again");

    // 2. A file that is not a packed file at all (say, another tool's) under the same name.
    std::fs::write(&packed, b"certainly not a qwenmk file").unwrap();
    let (output, stderr) = generate_france(&sandbox, &model, 5);
    assert!(
        stderr.contains("not a qwenmk packed weights file"),
        "{stderr}"
    );
    let (_, json) = split_json(&output);
    assert_eq!(ids(&json["tokens"]), want[..5]);

    // 3. A truncated file (an interrupted copy).
    let len = std::fs::metadata(&packed).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&packed)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    let (_, stderr) = generate_france(&sandbox, &model, 1);
    assert!(stderr.contains("truncated"), "{stderr}");
    PackedModel::open(&sandbox.packed_file()).expect("packed again");
}

#[test]
fn pack_writes_a_file_the_loader_accepts_and_replaces_it_atomically() {
    let sandbox = Sandbox::new();
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("gqa4.qwenmk");
    // Something is already there: pack replaces it.
    std::fs::write(&target, b"old contents").unwrap();
    let model = fixture("tiny-gqa4");
    let output = sandbox.qwenmk(&[
        "pack",
        "--model",
        model.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    let stderr = assert_success(&output);
    assert_eq!(common::stdout(&output).trim_end(), target.to_str().unwrap());
    for word in ["tensors", "checksum", "size", "time"] {
        assert!(stderr.contains(word), "summary names the {word}: {stderr}");
    }
    let packed = PackedModel::open(&target).expect("the packed file opens");
    assert_eq!(packed.config().num_hidden_layers, 3);
    assert_eq!(packed.config().num_attention_heads, 8);
    // Only the output is left: no temporary file beside it.
    let names: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("gqa4.qwenmk")]);
}

#[test]
fn pack_without_output_fills_the_cache_generate_uses() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa4");
    let output = sandbox.qwenmk(&["pack", "--model", model.to_str().unwrap()]);
    assert_success(&output);
    let packed = sandbox.packed_file();
    assert_eq!(
        common::stdout(&output).trim_end(),
        packed.to_str().unwrap(),
        "stdout is the path"
    );
    let before = mtime(&packed);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, stderr) = generate_france(&sandbox, &model, 2);
    assert!(
        !stderr.contains("packing"),
        "generate reuses pack's file: {stderr}"
    );
    assert_eq!(mtime(&packed), before);
}

#[test]
fn stops_at_a_stop_token_and_at_the_end_of_the_context() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let case = reference_case("tiny-gqa2", "raw-france");

    // The context holds the 5 prompt positions and 3 more: 4 tokens come out, the last one
    // computed from the full cache.
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--max-context",
        "8",
        "-n",
        "50",
        "--raw",
        &case.prompt,
    ]);
    let stderr = assert_success(&output);
    let (_, json) = split_json(&output);
    assert_eq!(ids(&json["tokens"]), case.generated_ids[..4]);
    assert_eq!(json["stats"]["stop_reason"], "context");
    assert!(stderr.contains("context is full"), "{stderr}");

    // A prompt exactly as long as the context still yields one token.
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--max-context",
        "5",
        "--raw",
        &case.prompt,
    ]);
    assert_success(&output);
    let (_, json) = split_json(&output);
    assert_eq!(ids(&json["tokens"]), case.generated_ids[..1]);
    assert_eq!(json["stats"]["stop_reason"], "context");
}

/// The tiny models never produce a stop token on their own: a copy whose generation_config.json
/// names the first reference token as end-of-sequence shows how a stop ends generation.
#[test]
fn a_stop_token_ends_generation_and_is_not_printed() {
    let sandbox = Sandbox::new();
    let case = reference_case("tiny-gqa2", "raw-france");
    let model = sandbox.copy_fixture("tiny-gqa2");
    let stop = case.generated_ids[2];
    std::fs::write(
        model.join("generation_config.json"),
        format!("{{\"eos_token_id\": [{stop}]}}"),
    )
    .unwrap();
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--raw",
        &case.prompt,
    ]);
    assert_success(&output);
    let (text, json) = split_json(&output);
    // Like Hugging Face's generate, the ids end with the stop token; the text leaves it out.
    assert_eq!(ids(&json["tokens"]), case.generated_ids[..3]);
    assert_eq!(json["stats"]["stop_reason"], "eos");
    assert_eq!(json["text"].as_str(), Some(text.as_str()));

    let two_tokens = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "-n",
        "2",
        "--raw",
        &case.prompt,
    ]);
    assert_success(&two_tokens);
    let (two_text, _) = split_json(&two_tokens);
    assert_eq!(text, two_text, "the stop token adds no text");

    // Without generation_config.json the stop ids come from config.json, and stderr says so.
    std::fs::remove_file(model.join("generation_config.json")).unwrap();
    let output = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "-n",
        "1",
        "--raw",
        &case.prompt,
    ]);
    let stderr = assert_success(&output);
    assert!(
        stderr.contains("stop tokens") && stderr.contains("config.json"),
        "{stderr}"
    );
}

#[test]
fn plain_output_is_the_text_and_a_newline() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let case = reference_case("tiny-gqa2", "raw-france");
    let json_run = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "-n",
        "6",
        "--raw",
        &case.prompt,
    ]);
    assert_success(&json_run);
    let (text, _) = split_json(&json_run);
    let plain = sandbox.qwenmk(&[
        "generate",
        // The fixtures' generation_config.json samples; the references are greedy.
        "--temp",
        "0",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "-n",
        "6",
        "--raw",
        &case.prompt,
    ]);
    let stderr = assert_success(&plain);
    assert_eq!(common::stdout(&plain), format!("{text}\n"));
    for word in ["prompt 5 tokens", "generated 6 tokens", "prefill", "tok/s"] {
        assert!(stderr.contains(word), "stats mention {word:?}: {stderr}");
    }
}

/// The emulator allocates its cache up front, so without --max-context it stops at 4096
/// positions and says so; the cpu engine takes the model's maximum.
#[test]
fn default_context_per_engine() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    let config_path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = 8192.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let case = reference_case("tiny-gqa2", "raw-france");

    let run = |device: &str| {
        let output = sandbox.qwenmk(&[
            "generate",
            // The fixtures' generation_config.json samples; the references are greedy.
            "--temp",
            "0",
            "--model",
            model.to_str().unwrap(),
            "--device",
            device,
            "--json",
            "-n",
            "2",
            "--raw",
            &case.prompt,
        ]);
        let stderr = assert_success(&output);
        let (_, json) = split_json(&output);
        assert_eq!(ids(&json["tokens"]), case.generated_ids[..2], "{device}");
        (stderr, json)
    };
    let (stderr, json) = run("emulator");
    assert_eq!(json["stats"]["max_context"], 4096);
    // Both check the kernel against transformers' float32: an f32 cache by default.
    assert_eq!(json["stats"]["kv_cache"], "f32");
    assert!(
        stderr.contains("4096") && stderr.contains("--max-context"),
        "the emulator's default is announced: {stderr}"
    );
    let (stderr, json) = run("cpu");
    assert_eq!(json["stats"]["max_context"], 8192);
    assert_eq!(json["stats"]["kv_cache"], "f32");
    assert!(!stderr.contains("4096"), "{stderr}");
}

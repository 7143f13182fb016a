//! Bad input to `qwenmk generate` and `qwenmk pack`: each case must end with a sentence that says
//! what is wrong (checked by a key phrase), a non-zero exit status and no panic.

mod common;

use std::process::Output;

use common::{Sandbox, fixture, stderr};

/// Asserts a clean failure with exit status `code` whose stderr contains every phrase.
fn assert_fails(output: &Output, code: i32, phrases: &[&str]) -> String {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    for phrase in phrases {
        assert!(
            err.contains(phrase),
            "stderr should contain {phrase:?}:\n{err}"
        );
    }
    err
}

/// `generate` over `model` on the cpu engine with a short raw prompt.
fn generate(sandbox: &Sandbox, model: &str, extra: &[&str]) -> Output {
    let mut args = vec!["generate", "--model", model, "--device", "cpu", "-n", "2"];
    args.extend_from_slice(extra);
    args.push("Hello");
    sandbox.qwenmk(&args)
}

/// Rewrites one field of a copied fixture's config.json.
fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

#[test]
fn missing_model_directory() {
    let sandbox = Sandbox::new();
    let missing = sandbox.hf_home().join("no-such-model");
    let output = generate(&sandbox, missing.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["error:", "does not exist"]);
    let output = sandbox.qwenmk(&["pack", "--model", missing.to_str().unwrap()]);
    assert_fails(&output, 1, &["does not exist"]);
}

#[test]
fn directory_without_config() {
    let sandbox = Sandbox::new();
    let empty = sandbox.hf_home().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let output = generate(&sandbox, empty.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["has no config.json"]);
    let output = sandbox.qwenmk(&["pack", "--model", empty.to_str().unwrap()]);
    assert_fails(&output, 1, &["has no config.json"]);
}

#[test]
fn model_path_is_a_file() {
    let sandbox = Sandbox::new();
    let config = fixture("tiny-gqa2").join("config.json");
    let output = generate(&sandbox, config.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["is a file"]);
}

#[test]
fn truncated_safetensors() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    let weights = model.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["model.safetensors", "truncated or corrupt"]);
    assert!(
        sandbox.packed_files().is_empty(),
        "a failed pack leaves nothing in the cache"
    );
    let out = sandbox.hf_home().join("x.qwenmk");
    let output = sandbox.qwenmk(&[
        "pack",
        "--model",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_fails(&output, 1, &["truncated or corrupt"]);
    assert!(!out.exists());
}

#[test]
fn wrong_architecture() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    edit_config(&model, |c| {
        c["model_type"] = "llama".into();
        c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    });
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["llama", "qwenmk runs only Qwen3"]);
    let output = sandbox.qwenmk(&["pack", "--model", model.to_str().unwrap()]);
    assert_fails(&output, 1, &["qwenmk runs only Qwen3"]);
}

#[test]
fn heads_that_do_not_divide() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    edit_config(&model, |c| c["num_attention_heads"] = 3.into());
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["num_attention_heads", "not a multiple"]);
}

#[test]
fn config_that_does_not_match_the_weights() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    edit_config(&model, |c| c["intermediate_size"] = 256.into());
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["has shape", "do not belong together"]);
}

#[test]
fn pack_output_is_a_directory() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "pack",
        "--model",
        model.to_str().unwrap(),
        "-o",
        sandbox.hf_home().to_str().unwrap(),
    ]);
    assert_fails(&output, 1, &["is a directory"]);
}

#[test]
fn pack_output_in_a_missing_directory_is_refused_naming_it() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let missing = sandbox.hf_home().join("new").join("dir");
    let out = missing.join("m.qwenmk");
    let output = sandbox.qwenmk(&[
        "pack",
        "--model",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let folder = missing.display().to_string();
    assert_fails(&output, 1, &[&folder, "does not exist", "mkdir -p"]);
    assert!(
        !missing.exists(),
        "no folder is created behind the user's back"
    );
}

#[test]
fn a_broken_config_says_its_parse_error_once() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    std::fs::write(model.join("config.json"), "{\"model_type\": \"qwen3\",").unwrap();
    for output in [
        generate(&sandbox, model.to_str().unwrap(), &[]),
        sandbox.qwenmk(&["pack", "--model", model.to_str().unwrap()]),
    ] {
        let err = assert_fails(
            &output,
            1,
            &["is not a valid model config", "EOF while parsing"],
        );
        assert_eq!(err.matches("EOF while parsing").count(), 1, "{err}");
    }
}

#[test]
fn prompt_longer_than_the_context() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-context",
        "3",
        "--raw",
        "The capital of France is",
    ]);
    assert_fails(
        &output,
        1,
        &[
            "the prompt has 5 tokens but the context holds 3",
            "raise --max-context",
            "up to 1024",
        ],
    );
    assert!(
        sandbox.packed_files().is_empty(),
        "the check comes before any packing"
    );
}

#[test]
fn context_beyond_the_model() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = generate(
        &sandbox,
        model.to_str().unwrap(),
        &["--max-context", "5000"],
    );
    assert_fails(&output, 1, &["--max-context 5000", "1024 positions"]);
    let output = generate(&sandbox, model.to_str().unwrap(), &["--max-context", "0"]);
    assert_fails(&output, 1, &["at least 1"]);
}

#[test]
fn empty_raw_prompt() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--raw",
        "",
    ]);
    assert_fails(&output, 1, &["prompt is empty"]);
}

#[test]
fn unknown_device() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "tpu",
        "Hello",
    ]);
    assert_fails(&output, 2, &["invalid value 'tpu'", "--device"]);
}

/// Only bf16 and f32 caches exist: anything else is clap's usage error on every command that
/// builds an engine.
#[test]
fn unknown_kv_cache_type() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let model = model.to_str().unwrap();
    for command in [
        &["generate", "--model", model, "--kv-cache", "f16", "Hello"][..],
        &["chat", "--model", model, "--kv-cache", "f16"],
        &["bench", "--model", model, "--kv-cache", "f16"],
    ] {
        let output = sandbox.qwenmk(command);
        let err = assert_fails(&output, 2, &["invalid value 'f16'", "--kv-cache"]);
        assert!(err.contains("bf16") && err.contains("f32"), "{err}");
    }
}

#[test]
fn garbage_tokenizer() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    std::fs::write(model.join("tokenizer.json"), b"{ this is not a tokenizer").unwrap();
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["tokenizer.json", "not a usable tokenizer"]);
}

#[test]
fn missing_tokenizer() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let output = generate(&sandbox, model.to_str().unwrap(), &[]);
    assert_fails(&output, 1, &["cannot read the tokenizer"]);
}

#[test]
fn offline_hub_repo_not_in_the_cache() {
    let sandbox = Sandbox::new();
    let output = sandbox.qwenmk(&[
        "generate",
        "--model",
        "Qwen/Qwen3-0.6B",
        "--offline",
        "--device",
        "cpu",
        "Hello",
    ]);
    let searched = sandbox.hf_home().join("hub");
    assert_fails(
        &output,
        1,
        &[
            "is not in the Hugging Face cache",
            searched.to_str().unwrap(),
        ],
    );
    let output = sandbox.qwenmk(&["pack", "--model", "Qwen/Qwen3-0.6B", "--offline"]);
    assert_fails(&output, 1, &["is not in the Hugging Face cache"]);
}

#[test]
fn gpu_device_without_a_usable_gpu_engine() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "gpu",
        "-n",
        "2",
        "Hello",
    ]);
    if output.status.success() {
        // A machine with a GPU and a built gpu engine: nothing to check here.
        return;
    }
    let err = assert_fails(&output, 1, &[]);
    assert!(
        ["not built", "GPU", "driver"]
            .iter()
            .any(|phrase| err.contains(phrase)),
        "the message says why the GPU cannot be used: {err}"
    );
}

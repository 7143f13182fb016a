//! Sampling, prompt sources and output from the command line: the same seed gives the same
//! tokens on the cpu engine and on the kernel (emulator), and in every run; defaults come from
//! generation_config.json; prompts come from words, -p, -f and stdin; Ctrl-C and a closed
//! stdout end cleanly.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{Sandbox, assert_success, fixture, ids, split_json, stderr};

fn generate(sandbox: &Sandbox, device: &str, extra: &[&str]) -> (Vec<u32>, serde_json::Value) {
    let model = fixture("tiny-gqa2");
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        device,
        "--json",
        "--ignore-eos",
    ];
    args.extend(extra);
    args.push("Tell me about the sea");
    let output = sandbox.qwenmk(&args);
    assert_success(&output);
    let (_, json) = split_json(&output);
    (ids(&json["tokens"]), json)
}

#[test]
fn the_same_seed_gives_the_same_tokens_on_cpu_and_emulator() {
    let sandbox = Sandbox::new();
    let settings: [&[&str]; 3] = [
        // Candidates: top-k, top-p and min-p, with the repeat penalty (its mask on the kernel).
        &[
            "-n",
            "6",
            "--seed",
            "11",
            "--temp",
            "0.9",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--min-p",
            "0.01",
            "--repeat-penalty",
            "1.3",
        ],
        // Temperature alone: Gumbel-max over the whole vocabulary.
        &[
            "-n", "5", "--seed", "5", "--temp", "1.0", "--top-k", "0", "--top-p", "1",
        ],
        // The model's defaults (temperature 0.6, top-k 20, top-p 0.95).
        &["-n", "5", "--seed", "99"],
    ];
    for extra in settings {
        let (cpu, json) = generate(&sandbox, "cpu", extra);
        let (again, _) = generate(&sandbox, "cpu", extra);
        let (emulator, _) = generate(&sandbox, "emulator", extra);
        assert_eq!(cpu, again, "{extra:?}: the same seed, another run");
        assert_eq!(
            cpu, emulator,
            "{extra:?}: cpu and the kernel on the emulator"
        );
        assert_eq!(
            json["stats"]["sampling"]["seed"]
                .as_u64()
                .unwrap()
                .to_string(),
            extra[3]
        );
    }
    // Different seeds give different draws, and sampling is not greedy.
    let (a, _) = generate(
        &sandbox,
        "cpu",
        &["-n", "8", "--seed", "1", "--temp", "1.2"],
    );
    let (b, _) = generate(
        &sandbox,
        "cpu",
        &["-n", "8", "--seed", "2", "--temp", "1.2"],
    );
    let (greedy, _) = generate(&sandbox, "cpu", &["-n", "8", "--temp", "0"]);
    assert_ne!(a, b);
    assert_ne!(a, greedy);
}

#[test]
fn defaults_come_from_generation_config_and_the_stats_say_so() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let output = sandbox.qwenmk(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "-n",
        "2",
        "--seed",
        "4",
        "Hi",
    ]);
    let err = assert_success(&output);
    assert!(
        err.contains("temp 0.6, top-k 20, top-p 0.95, seed 4"),
        "{err}"
    );
    // Without generation_config.json decoding is greedy.
    let copy = sandbox.copy_fixture("tiny-gqa2");
    std::fs::remove_file(copy.join("generation_config.json")).unwrap();
    let output = sandbox.qwenmk(&[
        "generate",
        "-m",
        copy.to_str().unwrap(),
        "--device",
        "cpu",
        "-n",
        "2",
        "Hi",
    ]);
    let err = assert_success(&output);
    assert!(err.contains("; greedy; stop"), "{err}");
}

#[test]
fn bad_sampling_flags_get_one_sentence() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    for (flag, value) in [
        ("--temp", "-1"),
        ("--top-k", "65"),
        ("--top-p", "1.5"),
        ("--repeat-last-n", "-3"),
    ] {
        let output = sandbox.qwenmk(&[
            "generate",
            "-m",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            flag,
            value,
            "Hi",
        ]);
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(
            err.starts_with("error: ") && err.contains(flag) && err.lines().count() == 1,
            "{err}"
        );
    }
}

/// `qwenmk ARGS` with `input` on stdin.
fn with_stdin(sandbox: &Sandbox, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qwenmk"))
        .env("HF_HOME", sandbox.hf_home())
        .env("HF_HUB_OFFLINE", "1")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qwenmk");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("qwenmk ends")
}

#[test]
fn prompts_come_from_words_flags_files_and_stdin() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let m = model.to_str().unwrap();
    let base = [
        "generate", "-m", m, "--device", "cpu", "-n", "1", "--temp", "0", "--json",
    ];
    let prompt_ids = |output: &std::process::Output| {
        assert_success(output);
        ids(&split_json(output).1["prompt_tokens"])
    };
    let quoted = prompt_ids(&sandbox.qwenmk(&[&base[..], &["Why is the sky blue?"]].concat()));
    let words =
        prompt_ids(&sandbox.qwenmk(&[&base[..], &["Why", "is", "the", "sky", "blue?"]].concat()));
    let flag = prompt_ids(&sandbox.qwenmk(&[&base[..], &["-p", "Why is the sky blue?"]].concat()));
    let file = sandbox.hf_home().join("prompt.txt");
    std::fs::write(&file, "Why is the sky blue?\n").unwrap();
    let from_file =
        prompt_ids(&sandbox.qwenmk(&[&base[..], &["-f", file.to_str().unwrap()]].concat()));
    let dash = prompt_ids(&with_stdin(
        &sandbox,
        &[&base[..], &["-"]].concat(),
        "Why is the sky blue?\n",
    ));
    let implicit = prompt_ids(&with_stdin(&sandbox, &base, "Why is the sky blue?"));
    for (name, got) in [
        ("words", &words),
        ("-p", &flag),
        ("-f", &from_file),
        ("-", &dash),
        ("stdin", &implicit),
    ] {
        assert_eq!(got, &quoted, "{name}");
    }
    // Two sources, an empty file, a missing file: one sentence each.
    for bad in [vec!["-p", "a", "b"], vec!["-f", "/nonexistent/prompt.txt"]] {
        let output = sandbox.qwenmk(&[&base[..], &bad[..]].concat());
        assert!(!output.status.success());
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    }
    std::fs::write(&file, "\n").unwrap();
    let output = sandbox.qwenmk(&[&base[..], &["-f", file.to_str().unwrap()]].concat());
    assert!(stderr(&output).contains("is empty"), "{}", stderr(&output));
}

#[test]
fn a_closed_stdout_ends_quietly_and_ctrl_c_prints_the_stats() {
    let sandbox = Sandbox::new();
    let model = fixture("tiny-gqa2");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_qwenmk"))
            .env("HF_HOME", sandbox.hf_home())
            .env("HF_HUB_OFFLINE", "1")
            .args(["generate", "-m", model.to_str().unwrap(), "--device", "cpu"])
            .args([
                "-n",
                "5000",
                "-c",
                "1024",
                "--ignore-eos",
                "--seed",
                "1",
                "Count",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run qwenmk")
    };
    // `| head -c 1`: read one byte, then close the pipe.
    let mut child = spawn();
    let mut byte = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut byte)
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("error"), "{}", stderr(&output));

    // Ctrl-C once text flows: the stats so far, and 130.
    let mut child = spawn();
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut byte)
        .unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("stop: interrupted") && err.contains("generated"),
        "{err}"
    );
}

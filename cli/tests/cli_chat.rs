//! `qwenmk chat` over piped stdin: every line is a turn, the KV cache carries over, and each
//! turn feeds only its new tokens.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Sandbox, fixture, ids, stderr};
use qwenmk::prompt::PromptTokenizer;

fn chat(sandbox: &Sandbox, args: &[&str], input: &str) -> std::process::Output {
    let model = fixture("tiny-gqa2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qwenmk"))
        .env("HF_HOME", sandbox.hf_home())
        .env("HF_HUB_OFFLINE", "1")
        .args(["chat", "-m", model.to_str().unwrap(), "--device", "cpu"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qwenmk chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("chat ends")
}

#[test]
fn piped_turns_feed_only_their_new_tokens() {
    let sandbox = Sandbox::new();
    let output = chat(
        &sandbox,
        &["--json", "-n", "5", "--temp", "0"],
        "Hello there\nTell me more\n",
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let turns: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per turn"))
        .collect();
    assert_eq!(turns.len(), 2, "{err}");
    let (first, second) = (&turns[0], &turns[1]);
    let fed = |t: &serde_json::Value| t["new_tokens"].as_u64().unwrap() as usize;
    let made = |t: &serde_json::Value| ids(&t["tokens"]).len();
    let position = |t: &serde_json::Value| t["position"].as_u64().unwrap() as usize;
    // Turn 1 fed its whole prompt; turn 2 the previous reply's last token, the end of that
    // turn (the reply stopped at -n, not at <|im_end|>), its own turn and the assistant's
    // opening — nothing of turn 1 again.
    let tokenizer = PromptTokenizer::load(&fixture("tiny-gqa2").join("tokenizer.json")).unwrap();
    let delta = "<|im_end|>\n<|im_start|>user\nTell me more<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_eq!(fed(second), 1 + tokenizer.encode(delta).unwrap().len());
    assert_eq!(position(first), fed(first) + made(first) - 1);
    assert_eq!(
        position(second),
        position(first) + fed(second) + made(second) - 1
    );
    assert!(
        err.contains("turn 2: fed") && err.contains("new tokens"),
        "{err}"
    );

    // The first reply is what `generate` gives for the same prompt.
    let model = fixture("tiny-gqa2");
    let generated = sandbox.qwenmk(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "-n",
        "5",
        "--temp",
        "0",
        "--ignore-eos",
        "Hello there",
    ]);
    let (_, json) = common::split_json(&generated);
    assert_eq!(ids(&first["tokens"]), ids(&json["tokens"]));
}

#[test]
fn commands_clear_and_exit() {
    let sandbox = Sandbox::new();
    let output = chat(
        &sandbox,
        &["-n", "3", "--temp", "0"],
        "Hi\n/clear\nHi\n/exit\nnever read\n",
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let out = String::from_utf8(output.stdout).unwrap();
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), 2, "two turns before /exit: {out:?}");
    assert_eq!(
        replies[0], replies[1],
        "after /clear the same prompt gives the same reply"
    );
    assert!(
        err.contains("conversation cleared") && !err.contains("turn 3"),
        "{err}"
    );
}

#[test]
fn a_system_prompt_opens_the_conversation_and_think_on_drops_the_empty_reasoning() {
    let sandbox = Sandbox::new();
    let output = chat(
        &sandbox,
        &["--json", "-n", "3", "--temp", "0", "--system", "Be brief"],
        "Hello there\n/think on\nTell me more\n",
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let turns: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per turn"))
        .collect();
    assert_eq!(turns.len(), 2, "{err}");
    let fed = |t: &serde_json::Value| t["new_tokens"].as_u64().unwrap() as usize;
    let tokenizer = PromptTokenizer::load(&fixture("tiny-gqa2").join("tokenizer.json")).unwrap();
    let count = |text: &str| tokenizer.encode(text).unwrap().len();
    // Turn 1: the system turn first, thinking off (an empty reasoning block).
    let first = "<|im_start|>system\nBe brief<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_eq!(fed(&turns[0]), count(first), "{err}");
    // Turn 2, thinking on: the assistant's opening without the empty block (plus the previous
    // reply's last token, as in the test above).
    let second = "<|im_end|>\n<|im_start|>user\nTell me more<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(fed(&turns[1]), 1 + count(second), "{err}");
    assert!(err.contains("(thinking on)"), "{err}");
}

//! Nothing hangs and nothing is left behind: Ctrl-C and SIGTERM remove a run's partial files,
//! a SIGKILL's leftovers are swept by the next run, and a hub that stalls ends in a sentence.
//! Every wait here is bounded (polls with a deadline); no duration is asserted.

mod common;

#[cfg(unix)]
#[path = "../src/hub/tests/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

#[cfg(unix)]
mod unix {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::common::{Sandbox, assert_success, stderr};

    use super::fake_hub;

    const DEADLINE: Duration = Duration::from_secs(60);

    /// Hidden partial files (`.<name>.partial-<pid>`, `*.incomplete`) under `dir`.
    fn partial_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path);
                } else if name.contains(".partial-") || name.ends_with(".incomplete") {
                    found.push(path);
                }
            }
        }
        found
    }

    /// Polls until `condition` holds; panics (killing `child`) past the deadline.
    fn wait_for(child: &mut Child, what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("qwenmk ended ({status}) before {what}");
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("no {what} within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(child: &Child, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the child to exit and returns its exit code and stderr.
    fn finish(mut child: Child) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for qwenmk") {
                let output = child.wait_with_output().expect("collect its output");
                let _ = status;
                return (output.status.code(), stderr(&output));
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("qwenmk did not exit within {DEADLINE:?} after the signal");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A config whose random weights take a while to write (~260 MB), so a signal lands while
    /// the partial file is being written.
    fn big_config(sandbox: &Sandbox) -> PathBuf {
        let path = sandbox.hf_home().join("big-config.json");
        let config = serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 8,
            "head_dim": 64, "max_position_embeddings": 512, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "eos_token_id": 1
        });
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    fn spawn_bench(sandbox: &Sandbox, config: &Path) -> Child {
        sandbox
            .command(&[
                "bench",
                "--synthetic",
                config.to_str().unwrap(),
                "--device",
                "cpu",
                "--depth",
                "0",
                "-n",
                "1",
                "-r",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qwenmk")
    }

    #[test]
    fn ctrl_c_and_sigterm_remove_the_partial_file_being_written() {
        for (signal_name, code) in [("INT", 130), ("TERM", 143)] {
            let sandbox = Sandbox::new();
            let config = big_config(&sandbox);
            let mut child = spawn_bench(&sandbox, &config);
            let dir = sandbox.packed_dir();
            wait_for(&mut child, "a partial file", || {
                !partial_files(&dir).is_empty()
            });
            signal(&child, signal_name);
            let (status, err) = finish(child);
            assert_eq!(status, Some(code), "SIG{signal_name}; stderr:\n{err}");
            assert!(err.contains("interrupted: removed 1 partial file"), "{err}");
            assert!(
                partial_files(&dir).is_empty(),
                "left: {:?}",
                partial_files(&dir)
            );
            assert!(sandbox.packed_files().is_empty(), "no half-written model");
        }
    }

    #[test]
    fn a_killed_runs_leftovers_are_swept_by_the_next_run() {
        let sandbox = Sandbox::new();
        let config = big_config(&sandbox);
        let mut child = spawn_bench(&sandbox, &config);
        let dir = sandbox.packed_dir();
        wait_for(&mut child, "a partial file", || {
            !partial_files(&dir).is_empty()
        });
        signal(&child, "KILL");
        let (status, _) = finish(child);
        assert_eq!(status, None, "killed by a signal");
        let left = partial_files(&dir);
        assert_eq!(left.len(), 1, "SIGKILL cannot clean up: {left:?}");

        let output = sandbox.qwenmk(&["ls"]);
        let err = assert_success(&output);
        assert!(
            err.contains("removed 1 partial file") && err.contains("interrupted runs"),
            "{err}"
        );
        assert!(partial_files(&dir).is_empty());
    }

    fn hub_files() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("config.json", b"{}".to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("model.safetensors", vec![7u8; 400_000]),
        ]
    }

    fn online(sandbox: &Sandbox, endpoint: &str, args: &[&str]) -> Command {
        let mut command = sandbox.command(args);
        command
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_ETAG_TIMEOUT", "1")
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "1")
            .env("QWENMK_HUB_RETRIES", "2");
        command
    }

    #[test]
    fn sigterm_during_a_download_removes_the_incomplete_blob() {
        let sandbox = Sandbox::new();
        let faults = fake_hub::Faults {
            stall_mid_file: Some(("model.safetensors".into(), 100_000)),
            ..Default::default()
        };
        let hub = fake_hub::FakeHub::start_with(&"ab".repeat(20), &hub_files(), faults);
        let mut child = online(&sandbox, &hub.endpoint(), &["pack", "-m", "org/tiny"])
            // A generous silence allowed, so that the stall is still going on at the signal.
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "30")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qwenmk");
        let hub_cache = sandbox.hf_home().join("hub");
        wait_for(&mut child, "an .incomplete blob with bytes in it", || {
            partial_files(&hub_cache)
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 100_000))
        });
        signal(&child, "TERM");
        let (status, err) = finish(child);
        assert_eq!(status, Some(143), "{err}");
        assert!(err.contains("interrupted: removed 1 partial file"), "{err}");
        assert!(partial_files(&hub_cache).is_empty());
    }

    #[test]
    fn a_hub_that_never_answers_ends_in_a_sentence() {
        let sandbox = Sandbox::new();
        let faults = fake_hub::Faults {
            stall_after_accept: true,
            ..Default::default()
        };
        let hub = fake_hub::FakeHub::start_with(&"ab".repeat(20), &hub_files(), faults);
        let output = online(
            &sandbox,
            &hub.endpoint(),
            &["generate", "-m", "org/tiny", "Hello"],
        )
        .output()
        .expect("run qwenmk");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        for part in [
            hub.endpoint().as_str(),
            "stopped answering",
            "2 tries",
            "HF_HUB_DOWNLOAD_TIMEOUT",
        ] {
            assert!(err.contains(part), "no {part:?} in: {err}");
        }
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
        assert_eq!(hub.requests().len(), 2);
    }
}

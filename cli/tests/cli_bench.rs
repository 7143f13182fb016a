//! `qwenmk bench` end to end on the cpu and emulator engines with tiny checkpoints: the output
//! formats, every depth and sample present (decode and prompt processing), numbers finite,
//! depths beyond the context skipped, the plot and the peers merge. No timing is asserted.

mod common;

use common::{Sandbox, assert_success, stderr, stdout};
use serde_json::Value;

fn bench_json(sandbox: &Sandbox, args: &[&str]) -> (Value, String) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let output = sandbox.qwenmk(&all);
    let err = assert_success(&output);
    let json = serde_json::from_str(&stdout(&output)).expect("stdout is one JSON document");
    (json, err)
}

fn positive(value: &Value, what: &str) -> f64 {
    let x = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

fn depths(json: &Value) -> Vec<u64> {
    json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["depth"].as_u64().expect("depth"))
        .collect()
}

#[test]
fn cpu_json_has_every_depth_and_sample() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    let model = model.to_str().unwrap();
    let (json, err) = bench_json(
        &sandbox,
        &[
            "-m", model, "--device", "cpu", "-d", "0,16,48", "-n", "4", "-p", "6", "-r", "2",
        ],
    );
    // The runs from the deepest depth: 6 prompt tokens, more than the 4 decoded.
    assert!(err.contains("KV cache of 54 positions"), "{err}");
    assert!(err.contains("and of a 6-token prompt"), "{err}");
    assert_eq!(depths(&json), vec![0, 16, 48]);
    assert_eq!(json["engine"], "cpu");
    assert_eq!(json["gpu"], Value::Null);
    assert_eq!(json["peak_bandwidth"], Value::Null);
    assert_eq!(json["model"]["kv_cache_dtype"], "f32");
    assert_eq!(json["model"]["name"], model);
    assert_eq!(json["settings"]["tokens"], 4);
    assert_eq!(json["settings"]["repetitions"], 2);
    assert_eq!(json["settings"]["max_context"], 54);
    assert_eq!(json["settings"]["prompt_tokens"], 6);
    assert!(
        json["prefill"].as_str().unwrap().starts_with("batched"),
        "{}",
        json["prefill"]
    );
    assert!(!json["qwenmk"]["version"].as_str().unwrap().is_empty());
    assert!(!json["qwenmk"]["commit"].as_str().unwrap().is_empty());
    assert!(json["date"].as_str().unwrap().ends_with('Z'));
    let weights = positive(&json["model"]["weight_bytes_per_token"], "weight bytes");
    let mut previous_kv = 0.0;
    for r in json["results"].as_array().unwrap() {
        let samples = r["samples_s"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{r}");
        assert_eq!(r["tokens_per_s"].as_array().unwrap().len(), 2);
        for s in samples.iter().chain(r["tokens_per_s"].as_array().unwrap()) {
            positive(s, "a sample");
        }
        for field in ["tok_s_mean", "tok_s_sd", "us_per_token", "gb_per_s"] {
            let x = r[field].as_f64().unwrap_or_else(|| panic!("{field}: {r}"));
            assert!(x.is_finite() && x >= 0.0, "{field} = {x}");
        }
        positive(&r["tok_s_mean"], "tok/s");
        assert_eq!(r["percent_of_peak"], Value::Null);
        assert_eq!(r["roofline_tok_s"], Value::Null);
        // Bytes per token: the weights plus a KV read that grows with the depth.
        let kv = positive(&r["kv_bytes_per_token"], "kv bytes");
        assert!(kv > previous_kv);
        previous_kv = kv;
        assert_eq!(
            r["bytes_per_token"].as_f64().unwrap(),
            weights + kv,
            "bytes per token = weights + KV"
        );
        let pp = &r["pp"];
        assert_eq!(pp["tokens"], 6, "{r}");
        assert_eq!(pp["samples_s"].as_array().unwrap().len(), 2, "{r}");
        for s in pp["samples_s"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pp["tokens_per_s"].as_array().unwrap())
        {
            positive(s, "a prompt sample");
        }
        positive(&pp["tok_s_mean"], "pp tok/s");
        positive(&pp["us_per_token"], "pp µs/token");
    }
}

/// `--kv-cache bf16` on the cpu engine: the report says so, and one position's keys and values,
/// and so the KV bytes each token reads, are half the f32 figures.
#[test]
fn a_bf16_cache_halves_the_kv_bytes_in_the_report() {
    let sandbox = Sandbox::new();
    let model = sandbox.copy_fixture("tiny-gqa2");
    let model = model.to_str().unwrap();
    let run = |kv: &str| {
        let (json, err) = bench_json(
            &sandbox,
            &[
                "-m",
                model,
                "--device",
                "cpu",
                "--kv-cache",
                kv,
                "--depth",
                "0,16",
                "-n",
                "2",
                "-p",
                "0",
                "-r",
                "1",
                "--warmup",
                "0",
            ],
        );
        assert!(err.contains(&format!("18 positions in {kv}")), "{err}");
        assert_eq!(json["model"]["kv_cache_dtype"], kv, "{json}");
        json
    };
    let (bf16, f32) = (run("bf16"), run("f32"));
    // tiny-gqa2: 2 layers × K and V × 2 KV heads × 32 dims.
    assert_eq!(f32["model"]["kv_bytes_per_position"], 2 * 2 * 2 * 32 * 4);
    assert_eq!(bf16["model"]["kv_bytes_per_position"], 2 * 2 * 2 * 32 * 2);
    for (a, b) in bf16["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f32["results"].as_array().unwrap())
    {
        let kv = |r: &Value| r["kv_bytes_per_token"].as_u64().unwrap();
        assert_eq!(kv(a) * 2, kv(b), "{a} vs {b}");
    }
    let md = sandbox.qwenmk(&[
        "bench",
        "-m",
        model,
        "--device",
        "cpu",
        "--kv-cache",
        "bf16",
        "--depth",
        "0",
        "-n",
        "1",
        "-p",
        "0",
        "-r",
        "1",
        "--warmup",
        "0",
    ]);
    let md = common::stdout(&md);
    assert!(md.contains("per position (bf16 cache)"), "{md}");
}

#[test]
fn prompt_processing_defaults_to_what_fits_and_can_be_skipped() {
    let sandbox = Sandbox::new();
    // The tiny config holds 256 positions: the default 512-token prompt is lowered to the 224
    // that fit beside depth 32.
    let run = |extra: &[&str], format: &str| {
        let mut args = vec![
            "bench",
            "--synthetic",
            "tiny",
            "--device",
            "cpu",
            "--depth",
            "0,32",
            "-n",
            "2",
            "-r",
            "1",
            "-o",
            format,
        ];
        args.extend_from_slice(extra);
        let output = sandbox.qwenmk(&args);
        let err = assert_success(&output);
        (stdout(&output), err)
    };
    let (text, err) = run(&[], "md");
    assert!(err.contains("KV cache of 256 positions"), "{err}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert!(rows[0].contains("| pp | pp tok/s |"), "{text}");
    for row in &rows[2..] {
        let fields: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(fields[9], "224", "{row}");
        assert!(fields[10].parse::<f64>().is_ok_and(|x| x > 0.0), "{row}");
    }
    assert!(text.contains("Prompt processing: batched"), "{text}");

    // -p 0: no prompt runs; the columns stay, empty.
    let (text, err) = run(&["-p", "0"], "csv");
    // Depth 32 plus the 4 warm-up steps, the longest run left.
    assert!(err.contains("KV cache of 36 positions"), "{err}");
    assert!(!err.contains("prompt"), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(",pp_tokens,pp_tok_s_mean,pp_tok_s_sd"),
        "{text}"
    );
    assert!(lines[1..].iter().all(|l| l.ends_with(",,,")), "{text}");
    let (json, _) = run(&["-p", "0"], "json");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["settings"]["prompt_tokens"], 0);
    assert!(
        json["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["pp"].is_null())
    );

    // A prompt given with -p is taken as it is: depths it does not fit beside are skipped.
    let (json, err) = run(&["-p", "240"], "json");
    assert!(err.contains("skipping depth 32"), "{err}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(depths(&json), vec![0]);
    assert_eq!(json["results"][0]["pp"]["tokens"], 240);
}

#[test]
fn markdown_has_a_header_and_one_row_per_depth() {
    let sandbox = Sandbox::new();
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "0,8,32",
        "-n",
        "3",
        "-r",
        "2",
    ]);
    assert_success(&output);
    let text = stdout(&output);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 2 + 3, "header, separator, 3 depths:\n{text}");
    let cells = |row: &str| row.trim_matches('|').split('|').count();
    assert!(rows[0].contains("tok/s") && rows[0].contains("% peak"));
    assert!(rows[0].contains("roofline tok/s") && rows[0].contains("GB/s"));
    assert!(rows[1].contains("--:"));
    for (row, depth) in rows[2..].iter().zip(["0", "8", "32"]) {
        assert_eq!(cells(row), cells(rows[0]), "{row}");
        let fields: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(fields[1], "cpu");
        assert_eq!(fields[2], depth);
        assert_eq!(fields[3], "3");
        assert!(fields[4].contains('±'), "{row}");
        assert_eq!(fields[7], "n/a", "no peak on the cpu: {row}");
    }
    assert!(text.contains("Peak bandwidth: n/a"), "{text}");
    assert!(
        text.contains("f32"),
        "the report says the KV cache is f32:\n{text}"
    );
}

#[test]
fn csv_has_the_same_columns_on_every_line() {
    let sandbox = Sandbox::new();
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "4,0",
        "-n",
        "2",
        "-r",
        "1",
        "-o",
        "csv",
    ]);
    assert_success(&output);
    let text = stdout(&output);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header = &lines[0];
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    for line in &lines[1..] {
        assert_eq!(line.len(), header.len(), "{text}");
        let tok_s: f64 = line[column("tok_s_mean")].parse().unwrap();
        assert!(tok_s.is_finite() && tok_s > 0.0);
        assert_eq!(line[column("percent_of_peak")], "");
        assert_eq!(line[column("engine")], "cpu");
    }
    // Depths come out sorted.
    assert_eq!(lines[1][column("depth")], "0");
    assert_eq!(lines[2][column("depth")], "4");
}

#[test]
fn the_emulator_runs_the_kernel_path() {
    let sandbox = Sandbox::new();
    let (json, err) = bench_json(
        &sandbox,
        &[
            "--synthetic",
            "tiny",
            "--device",
            "emulator",
            "--depth",
            "0,8",
            "-n",
            "2",
            "-r",
            "2",
        ],
    );
    assert!(err.contains("generating random weights"), "{err}");
    assert_eq!(json["engine"], "emulator");
    assert_eq!(json["model"]["synthetic_seed"], 0);
    assert_eq!(depths(&json), vec![0, 8]);
    assert!(
        json["prefill"]
            .as_str()
            .unwrap()
            .starts_with("one decode step per token"),
        "{}",
        json["prefill"]
    );
    for r in json["results"].as_array().unwrap() {
        assert_eq!(r["samples_s"].as_array().unwrap().len(), 2);
        positive(&r["tok_s_mean"], "tok/s");
        // The emulator's default prompt: 16 tokens.
        assert_eq!(r["pp"]["tokens"], 16, "{r}");
        positive(&r["pp"]["tok_s_mean"], "pp tok/s");
    }
    // The random weights are packed once and reused.
    let again = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "emulator",
        "--depth",
        "0",
        "-n",
        "1",
        "-r",
        "1",
    ]);
    let err = assert_success(&again);
    assert!(!err.contains("generating"), "{err}");
}

#[test]
fn depths_beyond_the_context_are_skipped_with_a_notice() {
    let sandbox = Sandbox::new();
    // The tiny config holds 256 positions.
    let (json, err) = bench_json(
        &sandbox,
        &[
            "--synthetic",
            "tiny",
            "--device",
            "cpu",
            "--depth",
            "0,250,4096",
            "-n",
            "8",
            "-r",
            "1",
        ],
    );
    assert!(
        err.contains("skipping depth 250") && err.contains("skipping depth 4096"),
        "{err}"
    );
    assert_eq!(depths(&json), vec![0]);
    let skipped: Vec<u64> = json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, vec![250, 4096]);

    // When nothing fits, it is an error.
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "300",
        "-n",
        "2",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no depth fits"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_plot_is_an_svg() {
    let sandbox = Sandbox::new();
    let plot = sandbox.hf_home().join("bench.svg");
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "0,8",
        "-n",
        "2",
        "-r",
        "2",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let err = assert_success(&output);
    assert!(err.contains("plot written"), "{err}");
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("tokens / s") && svg.contains("KV-cache depth"));
}

#[test]
fn peers_add_ratio_columns() {
    let sandbox = Sandbox::new();
    let peers = sandbox.hf_home().join("peers.json");
    std::fs::write(
        &peers,
        r#"{"gpu": "NVIDIA H100 80GB HBM3", "tokens": 2, "weights": "random (hand-written test)",
            "peers": [
              {"name": "hf_eager", "label": "HF eager bf16",
               "results": [{"depth": 0, "tok_s_mean": 0.5}, {"depth": 8, "tok_s_mean": 0.25}]},
              {"name": "hf_compile", "label": "HF compiled",
               "results": [{"depth": 0, "tok_s_mean": 2.0}]}
            ]}"#,
    )
    .unwrap();
    let peers = peers.to_str().unwrap();
    let common = [
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "0,8",
        "-n",
        "2",
        "-r",
        "1",
        "--peers",
        peers,
    ];
    let (json, _) = bench_json(&sandbox, &common);
    for r in json["results"].as_array().unwrap() {
        let ours = r["tok_s_mean"].as_f64().unwrap();
        let ratios = r["peers"].as_array().unwrap();
        assert_eq!(ratios.len(), 2);
        assert_eq!(ratios[0]["name"], "hf_eager");
        let theirs = if r["depth"] == 0 { 0.5 } else { 0.25 };
        let ratio = ratios[0]["ratio"].as_f64().unwrap();
        assert!((ratio - ours / theirs).abs() < 1e-9 * ratio, "{r}");
        if r["depth"] == 8 {
            assert_eq!(ratios[1]["ratio"], Value::Null, "no peer result at depth 8");
        }
    }
    assert_eq!(json["peers"]["gpu"], "NVIDIA H100 80GB HBM3");

    let mut md_args = vec!["bench"];
    md_args.extend_from_slice(&common);
    let output = sandbox.qwenmk(&md_args);
    assert_success(&output);
    let text = stdout(&output);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert!(
        rows[0].contains("vs HF eager bf16") && rows[0].contains("vs HF compiled"),
        "{text}"
    );
    assert!(
        rows[2].contains('×') && rows[3].ends_with("n/a |"),
        "{text}"
    );

    md_args.extend_from_slice(&["-o", "csv"]);
    let output = sandbox.qwenmk(&md_args);
    assert_success(&output);
    let text = stdout(&output);
    let header = text.lines().next().unwrap();
    assert!(
        header.ends_with("ratio_hf_eager,ratio_hf_compile"),
        "{header}"
    );
}

#[test]
fn bad_flags_are_refused_with_a_sentence() {
    let sandbox = Sandbox::new();
    let output = sandbox.qwenmk(&["bench", "--synthetic", "tiny", "--device", "cpu", "-n", "0"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("-n must be at least 1"));
    let output = sandbox.qwenmk(&["bench", "--synthetic", "-m", "Qwen/Qwen3-0.6B"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
    let output = sandbox.qwenmk(&["bench", "--synthetic", "nowhere/config.json"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--synthetic nowhere/config.json"));
    let peers = sandbox.hf_home().join("bad.json");
    std::fs::write(&peers, "{}").unwrap();
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--peers",
        peers.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not a peers file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_plot_is_a_png_when_named_so() {
    let sandbox = Sandbox::new();
    let plot = sandbox.hf_home().join("bench.PNG");
    let output = sandbox.qwenmk(&[
        "bench",
        "--synthetic",
        "tiny",
        "--device",
        "cpu",
        "--depth",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_success(&output);
    let png = std::fs::read(&plot).expect("the plot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &png[..8]
    );
}

#[test]
fn a_bad_plot_path_is_refused_before_the_run() {
    let sandbox = Sandbox::new();
    let missing = sandbox.hf_home().join("no").join("such");
    for (plot, phrases) in [
        (
            sandbox.hf_home().join("bench.jpg"),
            vec!["bench.jpg", "SVG or PNG", ".svg or .png"],
        ),
        (
            missing.join("bench.svg"),
            vec!["does not exist", "mkdir -p"],
        ),
    ] {
        let output = sandbox.qwenmk(&[
            "bench",
            "--synthetic",
            "tiny",
            "--device",
            "cpu",
            "--plot",
            plot.to_str().unwrap(),
        ]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        for phrase in phrases {
            assert!(err.contains(phrase), "no {phrase:?} in: {err}");
        }
        assert!(
            !err.contains("generating random weights") && !err.contains("KV cache"),
            "the path is checked before any work: {err}"
        );
        assert!(!plot.exists());
    }
    assert!(
        sandbox.packed_files().is_empty(),
        "no weights were generated"
    );
}

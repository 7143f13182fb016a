//! Tests against the real Qwen3 tokenizer in `fixtures/qwen3-tokenizer/` (no network needed).
//! Comparisons with transformers' own output live in `cli/tests/chat_template.rs`.

use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

fn tokenizer() -> PromptTokenizer {
    PromptTokenizer::load(&fixture("qwen3-tokenizer/tokenizer.json")).expect("fixture tokenizer")
}

fn template() -> ChatTemplate {
    ChatTemplate::load(&fixture("qwen3-tokenizer/tokenizer_config.json")).expect("fixture template")
}

#[test]
fn special_tokens_have_their_published_ids() {
    let tok = tokenizer();
    for (text, id) in [
        ("<|endoftext|>", 151643),
        ("<|im_start|>", 151644),
        ("<|im_end|>", 151645),
        ("<think>", 151667),
        ("</think>", 151668),
    ] {
        assert_eq!(tok.token_id(text), Some(id), "{text}");
        assert_eq!(
            tok.encode(text).unwrap(),
            vec![id],
            "{text} written in the text"
        );
    }
    assert_eq!(tok.vocab_size(), 151_669);
}

#[test]
fn user_turn_with_thinking_off_renders_an_empty_think_block() {
    let text = template()
        .render(&single_turn(None, "Hi"), RenderOptions::default())
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn thinking_on_leaves_the_assistant_turn_open() {
    let options = RenderOptions {
        add_generation_prompt: true,
        enable_thinking: true,
    };
    let text = template()
        .render(&single_turn(None, "Hi"), options)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn system_turn_comes_first() {
    let text = template()
        .render(
            &single_turn(Some("Be brief."), "Hi"),
            RenderOptions::default(),
        )
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn without_generation_prompt_nothing_follows_the_last_turn() {
    let options = RenderOptions {
        add_generation_prompt: false,
        enable_thinking: false,
    };
    let text = template()
        .render(&single_turn(None, "Hi"), options)
        .unwrap();
    assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n");
}

/// Exercises the Python-isms: `messages[::-1]`, `namespace`, `split('</think>')[-1]`,
/// `.lstrip('\n')`, `.strip('\n')` and `loop.index0 > ns.last_query_index`. Reasoning of an
/// assistant turn before the last user query is dropped; after it, it is kept.
#[test]
fn multi_turn_with_reasoning_follows_the_template_logic() {
    let messages = vec![
        ChatMessage::user("1+1?"),
        ChatMessage::assistant("<think>\nadd\n</think>\n\n2"),
        ChatMessage::user("times 3?"),
        ChatMessage::assistant("<think>\nmultiply\n</think>\n\n6"),
    ];
    let options = RenderOptions {
        add_generation_prompt: false,
        enable_thinking: true,
    };
    let text = template().render(&messages, options).unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n\
         <|im_start|>user\ntimes 3?<|im_end|>\n\
         <|im_start|>assistant\n<think>\nmultiply\n</think>\n\n6<|im_end|>\n"
    );
}

#[test]
fn reasoning_content_field_is_used_when_defined() {
    let mut answer = ChatMessage::assistant("6");
    answer.reasoning_content = Some("\nmultiply\n".into());
    let messages = vec![ChatMessage::user("2*3?"), answer];
    let options = RenderOptions {
        add_generation_prompt: false,
        enable_thinking: true,
    };
    let text = template().render(&messages, options).unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\n2*3?<|im_end|>\n\
         <|im_start|>assistant\n<think>\nmultiply\n</think>\n\n6<|im_end|>\n"
    );
}

#[test]
fn chat_prompt_tokenizes_special_tokens_to_single_ids() {
    let tok = tokenizer();
    let input = PromptInput::Chat {
        system: None,
        user: "Hi".into(),
        enable_thinking: false,
    };
    let prompt = encode_prompt(&tok, Some(&template()), &input).unwrap();
    let ids = &prompt.ids;
    assert_eq!(ids[0], 151644);
    assert_eq!(ids.iter().filter(|&&id| id == 151644).count(), 2);
    assert_eq!(ids.iter().filter(|&&id| id == 151645).count(), 1);
    assert!(ids.contains(&151667) && ids.contains(&151668));
    // `user`, `\n`, `Hi` and the rest are ordinary BPE tokens that decode back to the same text.
    assert_eq!(tok.decode(ids, false).unwrap(), prompt.text);
    // `user` 872, `\n` 198, `Hi` 13048, `assistant` 77091, `\n\n` 271.
    assert_eq!(
        ids,
        &[
            151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271
        ]
    );
}

#[test]
fn raw_mode_adds_nothing() {
    let tok = tokenizer();
    let prompt = encode_prompt(&tok, None, &PromptInput::Raw("Hello".into())).unwrap();
    assert_eq!(prompt.text, "Hello");
    assert_eq!(tok.decode(&prompt.ids, false).unwrap(), "Hello");
    assert!(
        prompt.ids.iter().all(|&id| id < 151_643),
        "no special token added: {:?}",
        prompt.ids
    );
    assert!(
        encode_prompt(&tok, None, &PromptInput::Raw(String::new()))
            .unwrap()
            .ids
            .is_empty()
    );
}

#[test]
fn chat_mode_without_template_is_an_error_mentioning_raw() {
    let tok = tokenizer();
    let input = PromptInput::Chat {
        system: None,
        user: "Hi".into(),
        enable_thinking: false,
    };
    let err = encode_prompt(&tok, None, &input).unwrap_err().to_string();
    assert!(err.contains("--raw"), "{err}");
}

/// Streams `text`'s ids one by one and checks the streaming contract.
fn assert_streams_cleanly(tok: &PromptTokenizer, text: &str) -> usize {
    let ids = tok.encode(text).unwrap();
    let mut stream = tok.stream(false);
    let mut chunks = Vec::new();
    for &id in &ids {
        if let Some(chunk) = stream.push(id).unwrap() {
            chunks.push(chunk);
        }
    }
    if let Some(tail) = stream.finish().unwrap() {
        chunks.push(tail);
    }
    for chunk in &chunks {
        assert!(
            !chunk.contains('\u{FFFD}'),
            "broken character in chunk {chunk:?} of {text:?}"
        );
    }
    assert_eq!(chunks.concat(), tok.decode(&ids, false).unwrap());
    assert_eq!(chunks.concat(), text);
    ids.len() - chunks.len()
}

#[test]
fn streaming_never_splits_a_character() {
    let tok = tokenizer();
    // Rare emoji and CJK are split into byte tokens by byte-level BPE: at least one id must
    // have been held back, or the test would not exercise the split at all.
    let text = "Rust 🦀 est génial! 鑫鑫鑫 🫠🧑‍🚀 наука 𝔘𝔫𝔦𝔠𝔬𝔡𝔢";
    let ids = tok.encode(text).unwrap();
    let broken = ids
        .iter()
        .filter(|&&id| tok.decode(&[id], false).unwrap().contains('\u{FFFD}'))
        .count();
    assert!(
        broken > 0,
        "the text should contain tokens that are partial characters"
    );
    assert!(assert_streams_cleanly(&tok, text) > 0);
    assert_streams_cleanly(&tok, "plain ascii text, nothing held back");
}

#[test]
fn streaming_flushes_an_incomplete_character_at_the_end() {
    let tok = tokenizer();
    // A character the vocabulary has no whole token for, so it is spelled in byte tokens.
    let ids = ["𠀀", "🫠", "𝔘"]
        .into_iter()
        .map(|c| tok.encode(c).unwrap())
        .find(|ids| ids.len() > 1)
        .expect("one of the rare characters takes several byte tokens");
    let mut stream = tok.stream(false);
    assert_eq!(
        stream.push(ids[0]).unwrap(),
        None,
        "half an emoji must not be printed"
    );
    assert_eq!(stream.finish().unwrap().as_deref(), Some("\u{FFFD}"));
}

#[test]
fn streaming_can_skip_special_tokens() {
    let tok = tokenizer();
    let ids = tok.encode("a<|im_end|>b").unwrap();
    let mut stream = tok.stream(true);
    let mut out = String::new();
    for id in ids {
        out.extend(stream.push(id).unwrap());
    }
    out.extend(stream.finish().unwrap());
    assert_eq!(out, "ab");
}

#[test]
fn stop_tokens_come_from_generation_config() {
    let tok = tokenizer();
    let gen_config = fixture("qwen3-0.6b/generation_config.json");
    let stop = StopTokens::load(
        Some(&gen_config),
        Some(&fixture("qwen3-0.6b/config.json")),
        &tok,
    )
    .unwrap();
    assert_eq!(stop.ids, vec![151645, 151643]);
    assert_eq!(stop.source, StopSource::GenerationConfig(gen_config));
}

#[test]
fn stop_tokens_fall_back_to_config_then_tokenizer() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let gen_config = dir.path().join("generation_config.json");
    let config = dir.path().join("config.json");

    // Neither file exists: the tokenizer's Qwen end markers, reported as a fallback.
    let stop = StopTokens::load(Some(&gen_config), Some(&config), &tok).unwrap();
    assert_eq!(stop.ids, vec![151645, 151643]);
    assert_eq!(stop.source, StopSource::TokenizerFallback);
    assert!(stop.describe_source().contains("no eos_token_id"));

    // config.json with a single integer.
    std::fs::write(&config, r#"{"eos_token_id": 151643, "hidden_size": 8}"#).unwrap();
    let stop = StopTokens::load(Some(&gen_config), Some(&config), &tok).unwrap();
    assert_eq!(stop.ids, vec![151643]);
    assert_eq!(stop.source, StopSource::ModelConfig(config.clone()));

    // A generation config without eos_token_id falls through to config.json.
    std::fs::write(&gen_config, r#"{"do_sample": false}"#).unwrap();
    let stop = StopTokens::load(Some(&gen_config), Some(&config), &tok).unwrap();
    assert_eq!(stop.source, StopSource::ModelConfig(config.clone()));

    // A corrupt one is an error naming the file, not a silent fallback.
    std::fs::write(&gen_config, "{ not json").unwrap();
    let err = StopTokens::load(Some(&gen_config), Some(&config), &tok)
        .unwrap_err()
        .to_string();
    assert!(err.contains("generation_config.json"), "{err}");
}

#[test]
fn missing_and_corrupt_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tokenizer.json");
    let err = PromptTokenizer::load(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("--model"), "{err}");

    std::fs::write(&missing, r#"{"version": "1.0", "model": {"type": "BPE""#).unwrap();
    let err = PromptTokenizer::load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains("tokenizer.json"),
        "{err}"
    );
}

#[test]
fn tokenizer_config_without_template_suggests_raw() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenizer_config.json");
    std::fs::write(&config, r#"{"eos_token": "<|im_end|>"}"#).unwrap();
    let err = ChatTemplate::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("no chat template") && err.contains("--raw"),
        "{err}"
    );
    assert!(err.contains(&config.display().to_string()), "{err}");

    let err = ChatTemplate::load(&dir.path().join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("absent.json") && err.contains("--raw"),
        "{err}"
    );

    std::fs::write(&config, "not json").unwrap();
    let err = ChatTemplate::load(&config).unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn chat_template_jinja_file_overrides_the_config_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenizer_config.json");
    std::fs::write(
        &config,
        r#"{"chat_template": "from config", "eos_token": {"content": "E"}}"#,
    )
    .unwrap();
    let from_config = ChatTemplate::load(&config).unwrap();
    assert_eq!(
        from_config.render(&[], RenderOptions::default()).unwrap(),
        "from config"
    );

    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ eos_token }} from file\n",
    )
    .unwrap();
    let from_file = ChatTemplate::load(&config).unwrap();
    // The AddedToken form of eos_token is unwrapped, and the single trailing newline dropped
    // (jinja2's keep_trailing_newline=False).
    assert_eq!(
        from_file.render(&[], RenderOptions::default()).unwrap(),
        "E from file"
    );
}

#[test]
fn template_helpers_match_transformers() {
    let render = |source: &str| {
        let t = ChatTemplate::from_source(source.into(), vec![], Path::new("inline")).unwrap();
        t.render(&single_turn(None, "x"), RenderOptions::default())
    };
    // tojson as json.dumps(ensure_ascii=False): Python separators, no HTML escaping.
    assert_eq!(
        render(r#"{{ {"a": [1, 2], "b": "<é>"} | tojson }}"#).unwrap(),
        r#"{"a": [1, 2], "b": "<é>"}"#
    );
    assert_eq!(
        render(r#"{{ [1] | tojson(indent=2) }}"#).unwrap(),
        "[\n  1\n]"
    );
    // trim_blocks + lstrip_blocks: block tags leave no blank lines or indentation.
    assert_eq!(
        render("{% if true %}\n    a\n{% endif %}\n").unwrap(),
        "    a\n"
    );
    assert_eq!(render("  {% if true %}\nb{% endif %}").unwrap(), "b");
    // raise_exception surfaces the template's message.
    let err = render("{{ raise_exception('roles must alternate') }}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("roles must alternate"), "{err}");
}

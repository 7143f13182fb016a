//! Our tokenizer and chat template against transformers' own output, recorded in
//! `fixtures/chat-template-cases.json` (see `fixtures/README.md`): the rendered text and ids of
//! `apply_chat_template` for a set of conversations, and `encode`/`decode`/stream chunks of raw
//! strings.

use std::path::{Path, PathBuf};

use qwenmk::prompt::{
    ChatMessage, ChatTemplate, PromptInput, PromptTokenizer, RenderOptions, encode_prompt,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    tokenizer: String,
    transformers: String,
    conversations: Vec<Conversation>,
    encodings: Vec<Encoding>,
}

#[derive(Deserialize)]
struct Conversation {
    name: String,
    messages: Vec<ChatMessage>,
    /// `null`: transformers was called without `enable_thinking`.
    enable_thinking: Option<bool>,
    add_generation_prompt: bool,
    rendered: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Encoding {
    name: String,
    text: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    decoded: String,
    decoded_skip_special: String,
    /// What a streaming decoder can print after each token (every complete character so far).
    stream_chunks: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load() -> (Cases, PromptTokenizer, ChatTemplate) {
    let path = repo_root().join("fixtures/chat-template-cases.json");
    let text = std::fs::read_to_string(&path).expect("fixtures/chat-template-cases.json");
    let cases: Cases = serde_json::from_str(&text).expect("valid chat-template cases");
    let dir = repo_root().join(&cases.tokenizer);
    let tokenizer = PromptTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let template = ChatTemplate::load(&dir.join("tokenizer_config.json")).unwrap();
    (cases, tokenizer, template)
}

#[test]
fn conversations_render_and_tokenize_like_transformers() {
    let (cases, tokenizer, template) = load();
    assert!(cases.conversations.len() >= 10);
    for case in &cases.conversations {
        let options = RenderOptions {
            add_generation_prompt: case.add_generation_prompt,
            // Qwen3's template tests `enable_thinking is defined and enable_thinking is false`,
            // so "not passed" renders like true; the `user-think-default` case checks that.
            enable_thinking: case.enable_thinking.unwrap_or(true),
        };
        let rendered = template.render(&case.messages, options).unwrap();
        assert_eq!(
            rendered, case.rendered,
            "{}: rendering differs from transformers {}",
            case.name, cases.transformers
        );
        assert_eq!(
            tokenizer.encode(&rendered).unwrap(),
            case.ids,
            "{}: ids",
            case.name
        );
    }
}

#[test]
fn single_turn_prompts_match_transformers() {
    let (cases, tokenizer, template) = load();
    let mut checked = 0;
    for case in &cases.conversations {
        // The shape `qwenmk generate` builds: [system], user, with a generation prompt.
        let (system, user) = match case.messages.as_slice() {
            [user] if user.role == "user" => (None, user),
            [system, user] if system.role == "system" && user.role == "user" => {
                (Some(system.content.clone()), user)
            }
            _ => continue,
        };
        let input = PromptInput::Chat {
            system,
            user: user.content.clone(),
            enable_thinking: case.enable_thinking.unwrap_or(true),
        };
        let prompt = encode_prompt(&tokenizer, Some(&template), &input).unwrap();
        assert_eq!(prompt.text, case.rendered, "{}", case.name);
        assert_eq!(prompt.ids, case.ids, "{}", case.name);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} single-turn cases");
}

#[test]
fn raw_strings_encode_and_decode_like_transformers() {
    let (cases, tokenizer, _) = load();
    assert!(cases.encodings.len() >= 10);
    for case in &cases.encodings {
        let prompt = encode_prompt(&tokenizer, None, &PromptInput::Raw(case.text.clone())).unwrap();
        assert_eq!(prompt.ids, case.ids, "{}: ids", case.name);
        let tokens: Vec<String> = case
            .ids
            .iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap())
            .collect();
        assert_eq!(tokens, case.tokens, "{}: token strings", case.name);
        assert_eq!(
            tokenizer.decode(&case.ids, false).unwrap(),
            case.decoded,
            "{}",
            case.name
        );
        assert_eq!(
            tokenizer.decode(&case.ids, true).unwrap(),
            case.decoded_skip_special,
            "{}: skip_special_tokens",
            case.name
        );
    }
}

/// Streams each case's ids. Our chunks may be coarser than the fixture's (the tokenizers
/// crate's stream waits until the text no longer ends in a partial character, where the fixture
/// prints every complete character at once), but never ahead of it, never behind it once nothing
/// is pending, and never broken.
#[test]
fn streaming_matches_transformers_decode() {
    let (cases, tokenizer, _) = load();
    let mut held_back = 0;
    for case in &cases.encodings {
        for skip_special in [false, true] {
            let mut stream = tokenizer.stream(skip_special);
            let mut ours = String::new();
            let mut theirs = String::new();
            for (i, &id) in case.ids.iter().enumerate() {
                let chunk = stream.push(id).unwrap().unwrap_or_default();
                assert!(
                    !chunk.contains('\u{FFFD}'),
                    "{}: broken chunk {chunk:?}",
                    case.name
                );
                ours.push_str(&chunk);
                if skip_special {
                    continue;
                }
                theirs.push_str(&case.stream_chunks[i]);
                assert!(
                    theirs.starts_with(&ours),
                    "{}: token {i} printed ahead",
                    case.name
                );
                let whole = tokenizer.decode(&case.ids[..=i], false).unwrap();
                if whole == theirs {
                    assert_eq!(
                        ours, theirs,
                        "{}: token {i} held back needlessly",
                        case.name
                    );
                } else {
                    held_back += 1;
                }
            }
            if let Some(tail) = stream.finish().unwrap() {
                ours.push_str(&tail);
            }
            let expected = if skip_special {
                &case.decoded_skip_special
            } else {
                &case.decoded
            };
            assert_eq!(
                &ours, expected,
                "{}: skip_special={skip_special}",
                case.name
            );
        }
    }
    assert!(
        held_back > 0,
        "the cases should split characters across tokens"
    );
}

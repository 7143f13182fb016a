//! Where the prompt text comes from: `-p TEXT`, positional words, `-f FILE`, or standard input
//! (`-`, or no prompt at all while stdin is not a terminal), as llama.cpp takes them.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The prompt the user gave, before it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    Text(String),
    File(PathBuf),
    Stdin,
}

impl PromptSource {
    /// The one source among `-p`, the positional words and `-f`; the words `-` alone mean
    /// stdin, and nothing at all means stdin when it is not a terminal.
    pub fn choose(
        flag: Option<&str>,
        words: &[String],
        file: Option<&PathBuf>,
        stdin_is_terminal: bool,
    ) -> Result<Self> {
        let words = (!words.is_empty()).then(|| words.join(" "));
        let given = [flag.is_some(), words.is_some(), file.is_some()];
        if given.iter().filter(|&&g| g).count() > 1 {
            bail!(
                "give the prompt one way: as words, with -p/--prompt, or with -f/--file (use - \
                 for stdin)"
            );
        }
        Ok(match (flag, words, file) {
            (Some(text), _, _) => PromptSource::Text(text.to_owned()),
            (_, Some(words), _) if words == "-" => PromptSource::Stdin,
            (_, Some(words), _) => PromptSource::Text(words),
            (_, _, Some(path)) if path.as_os_str() == "-" => PromptSource::Stdin,
            (_, _, Some(path)) => PromptSource::File(path.clone()),
            _ if !stdin_is_terminal => PromptSource::Stdin,
            _ => bail!(
                "no prompt: give it as words (qwenmk generate \"Why is the sky blue?\"), with \
                 -p/--prompt, with -f/--file FILE, or pipe it on stdin"
            ),
        })
    }
}

/// The text of `source`. A trailing newline (what `echo` and editors add) is dropped; an
/// empty prompt is an error.
pub fn read_prompt(source: &PromptSource) -> Result<String> {
    let mut text = match source {
        PromptSource::Text(text) => text.clone(),
        PromptSource::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the prompt file {}", path.display()))?,
        PromptSource::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the prompt from stdin (is it UTF-8 text?)")?;
            text
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.trim().is_empty() {
        let from = match source {
            PromptSource::Text(_) => "the prompt".to_owned(),
            PromptSource::File(path) => format!("the prompt file {}", path.display()),
            PromptSource::Stdin => "stdin".to_owned(),
        };
        bail!("{from} is empty; give some text");
    }
    Ok(text)
}

/// Whether stdin is a terminal (a prompt is then never read from it implicitly).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

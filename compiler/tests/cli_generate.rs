//! `nnc generate` as a user runs it, end to end on the one-layer llama of the GGUF fixtures (with a
//! KV cache) and a tiny byte-level BPE `tokenizer.json` written here, and on the real
//! SmolLM2-135M-Instruct (Q4_1 GGUF, its own tokenizer) when `bench/fetch_models.sh` has fetched it. The decoder's crate is built
//! once, in a work directory kept under the target directory, so later runs of the suite only run
//! it.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gguf")
        .join(name)
}

/// A 16-token vocabulary, the size of the fixture's: `<s>`, `</s>`, then the letters a to n.
fn tiny_tokenizer_json() -> String {
    let special = |id: u32, content: &str| {
        format!(
            r#"{{"id":{id},"content":"{content}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#
        )
    };
    let mut vocab = vec![r#""<s>":0"#.to_string(), r#""</s>":1"#.to_string()];
    vocab.extend(
        (b'a'..=b'n')
            .enumerate()
            .map(|(i, letter)| format!(r#""{}":{}"#, letter as char, i + 2)),
    );
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{},{}],"normalizer":null,
"pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
"post_processor":null,
"decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
"model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{{{}}},"merges":[]}}}}"#,
        special(0, "<s>"),
        special(1, "</s>"),
        vocab.join(",")
    )
}

#[test]
fn generate_continues_a_prompt_and_reports_its_speed() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_generate");
    std::fs::create_dir_all(&dir).unwrap();
    // The projects an earlier run left (of other generated code, under other names), so that
    // the count below sees this run's alone.
    if let Ok(entries) = std::fs::read_dir(dir.join("work")) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("tiny_llama")
            {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
    }
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, tiny_tokenizer_json()).unwrap();
    // The fixture's llama with a KV cache, so that it has a decoder.
    let model = dir.join("tiny_llama_decoder.nn");
    let source = std::fs::read_to_string(fixture("tiny_llama.nn")).unwrap();
    assert!(source.contains("causal = true)"));
    std::fs::write(
        &model,
        source.replace("causal = true)", "causal = true, kv_cache = 16)"),
    )
    .unwrap();
    let generate = |max_new_tokens: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .arg("generate")
            .arg(&model)
            .arg("--weights")
            .arg(fixture("tiny_llama.safetensors"))
            .arg("--tokenizer")
            .arg(&tokenizer)
            .args([
                "--prompt",
                "abc",
                "--greedy",
                "--max-new-tokens",
                max_new_tokens,
            ])
            .arg("--work-dir")
            .arg(dir.join("work"))
            .output()
            .expect("nnc runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "nnc generate failed:\n{stderr}");
        (
            String::from_utf8(output.stdout).expect("UTF-8 text"),
            stderr,
        )
    };
    let (text, stderr) = generate("4");
    // The prompt, then up to four letters (fewer if the model picks `</s>`).
    let text = text.trim_end_matches('\n');
    let new = text.strip_prefix("abc").expect("the prompt comes first");
    assert!(
        new.len() <= 4 && new.chars().all(|c| ('a'..='n').contains(&c)),
        "{text:?}"
    );
    assert!(stderr.contains("prompt: 3 tokens"), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
    // Greedy decoding is deterministic, and a longer run starts the same way; the crate is not
    // rebuilt for another number of tokens (same code, same project).
    let (longer, _) = generate("6");
    assert!(longer.starts_with(text), "{longer:?} vs {text:?}");
    // (The real SmolLM2's test below may build its own project in the same work directory.)
    let projects = std::fs::read_dir(dir.join("work"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("tiny_llama")
        })
        .count();
    assert_eq!(projects, 1);
}

#[test]
fn generate_with_the_real_smollm2_says_paris() {
    let gguf = match nnc_test_support::cached_model(nnc_test_support::model_cache::SMOLLM2_Q4_1) {
        Ok(path) => path,
        Err(skipped) => {
            println!("{skipped}");
            return;
        }
    };
    // The work directory of the test above: the two decoders share nnc-runtime's release build.
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_generate/work");
    let output = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("generate")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/llama_decoder.nn"))
        .arg("--weights")
        .arg(&gguf)
        .args(["--prompt", "The capital of France is", "--greedy"])
        .args(["--max-new-tokens", "4"])
        .arg("--work-dir")
        .arg(&work)
        .output()
        .expect("nnc runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nnc generate failed:\n{stderr}");
    let text = String::from_utf8(output.stdout).expect("UTF-8 text");
    println!("{text}{stderr}");
    assert!(
        text.starts_with("The capital of France is Paris"),
        "{text:?}"
    );
}

//! `nnc report`, `nnc graph` and `nnc bench` as a user runs them.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn nnc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("nnc runs");
    assert!(
        output.status.success(),
        "nnc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A fresh directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn report_prints_a_table_json_and_markdown() {
    let table = run(nnc().arg("report").arg(example("resnet18.nn")));
    assert!(table.contains("layer1.0.conv1 (conv2d)"), "{table}");
    assert!(
        table.contains("Parameters:               11,689,512 (11.69 M)"),
        "{table}"
    );
    assert!(
        table.contains("MACs:                     1,814,073,344 (1.81 G)"),
        "{table}"
    );

    let json = run(nnc()
        .args(["report", "--format", "json"])
        .arg(example("mlp.nn")));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schema_version"], 2);
    assert_eq!(value["totals"]["parameters"], 203_530);

    let markdown = run(nnc()
        .args(["report", "--format", "markdown"])
        .arg(example("mlp.nn")));
    assert!(
        markdown.contains("| 0 | `fc1` | linear | [1, 256] | 200,960 |"),
        "{markdown}"
    );

    // -O2 reports the graph code is generated for: the ReLU is fused into fc1.
    let optimized = run(nnc()
        .args(["report", "-O2", "--format", "json"])
        .arg(example("mlp.nn")));
    let value: serde_json::Value = serde_json::from_str(&optimized).unwrap();
    assert!(value["totals"]["layers"].as_u64().unwrap() <= 3);
    assert_eq!(value["totals"]["parameters"], 203_530);
}

#[test]
fn report_shows_quantized_sizes_and_integer_macs() {
    let table = run(nnc().arg("report").arg(example("llama_decoder.nn")).args([
        "--quantize",
        "q4_1",
        "--quantize-mode",
        "fast",
    ]));
    for line in [
        "Model size:               209,822,976 bytes (200.10 MiB) of mixed weights",
        "  in q4_1:                66,355,200 bytes (63.28 MiB) in 210 tensors",
        "  in q8_0:                30,081,024 bytes (28.69 MiB) in 1 tensor",
        "Weights read per token:   96,579,072 bytes (92.10 MiB)",
        "OPS (integer):",
    ] {
        assert!(table.contains(line), "no `{line}` in:\n{table}");
    }
    let json = run(nnc()
        .args(["report", "--format", "json", "--quantize", "q4_1"])
        .arg(example("llama_decoder.nn")));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["totals"]["weight_bytes_per_token"], 96_579_072);
    assert_eq!(value["totals"]["weight_storage"][1]["storage"], "q4_1");
    // The exact mode multiplies in f32.
    assert_eq!(value["totals"]["integer_macs"], 0);
}

#[test]
fn report_writes_svg_charts() {
    let dir = scratch("report-svg");
    run(nnc()
        .arg("report")
        .arg(example("tiny_gpt.nn"))
        .arg("--svg")
        .arg(&dir));
    for file in ["tiny_gpt-macs.svg", "tiny_gpt-memory.svg"] {
        let svg = std::fs::read_to_string(dir.join(file)).unwrap();
        roxmltree::Document::parse(&svg).unwrap_or_else(|error| panic!("{file}: {error}"));
    }
}

#[test]
fn graph_writes_dot_and_svg_without_graphviz() {
    let dir = scratch("graph");
    let printed = run(nnc()
        .arg("graph")
        .arg(example("mobilenet_v2.nn"))
        .args(["--layout", "builtin", "-o"])
        .arg(&dir));
    assert!(printed.contains("the built-in layout"), "{printed}");
    let dot = std::fs::read_to_string(dir.join("mobilenet_v2.dot")).unwrap();
    assert!(dot.starts_with("digraph \"mobilenet_v2\""));
    let svg = std::fs::read_to_string(dir.join("mobilenet_v2.svg")).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
}

#[test]
fn bench_explains_itself() {
    let help = run(nnc().args(["bench", "--help"]));
    for option in [
        "--iterations",
        "--warmup",
        "--warmup-seconds",
        "--weights",
        "--threads",
        "--top",
        "--format",
        "--decode",
        "--prompt-tokens",
        "--new-tokens",
    ] {
        assert!(help.contains(option), "{help}");
    }
}

#[test]
fn bench_refuses_times_that_are_not_a_finite_number_of_seconds() {
    for option in ["--warmup-seconds", "--seconds"] {
        for seconds in ["-1", "inf", "NaN", "soon"] {
            let output = nnc()
                .arg("bench")
                .arg(format!("{option}={seconds}"))
                .arg(example("mlp.nn"))
                .output()
                .expect("nnc runs");
            assert!(!output.status.success(), "{option}={seconds}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(option), "{option}={seconds}: {stderr}");
        }
    }
}

#[test]
fn bench_decode_refuses_a_network_without_a_decoder_before_building() {
    let work_dir = scratch("bench_decode_refuses");
    let output = nnc()
        .args(["bench", "--decode", "--work-dir"])
        .arg(&work_dir)
        .arg(example("resnet18.nn"))
        .output()
        .expect("nnc runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`resnet18` has no decoder"), "{stderr}");
    // Nothing was written: the check comes before the harness.
    assert_eq!(std::fs::read_dir(&work_dir).unwrap().count(), 0);
    // The decode options need --decode.
    let output = nnc()
        .args(["bench", "--new-tokens", "3"])
        .arg(example("tiny_gpt.nn"))
        .output()
        .expect("nnc runs");
    assert!(!output.status.success());
}

//! The `nnc check` command on the bundled examples and on every bad input.

use std::path::PathBuf;
use std::process::Command;

use nnc_test_support::workspace_root;

/// The `.nn` files of `folder`, relative to the workspace root.
fn nn_files(folder: &str) -> Vec<PathBuf> {
    nnc_test_support::nn_files(&workspace_root().join(folder))
}

fn nnc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap()
}

#[test]
fn check_accepts_every_example_and_prints_its_ir() {
    for path in nn_files("examples") {
        let path = path.to_str().unwrap();
        let output = nnc(&["check", path, "--emit", "ir"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("network "), "{path}: {stdout}");
    }
}

#[test]
fn check_rejects_every_bad_input_with_a_located_diagnostic() {
    for path in nn_files("tests/diagnostics") {
        let relative = path
            .strip_prefix(workspace_root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let output = nnc(&["check", &relative]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{relative}: {stderr}");
        assert!(!stderr.contains("panicked"), "{relative}: {stderr}");
        assert!(
            stderr.contains(&format!("┌─ {relative}:")),
            "{relative}: no file:line:col in\n{stderr}"
        );
        assert!(stderr.contains('^'), "{relative}: no caret in\n{stderr}");
        assert!(stderr.contains("could not compile"), "{relative}: {stderr}");
    }
}

#[test]
fn check_binds_dimensions_from_the_command_line() {
    let output = nnc(&[
        "check",
        "examples/mlp.nn",
        "--emit",
        "ir",
        "--dim",
        "batch=16",
    ]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("%0: f32[16, 784] = input x"));

    let output = nnc(&["check", "examples/mlp.nn", "--dim", "batch"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME=SIZE"));
}

#[test]
fn check_reports_a_missing_file_without_panicking() {
    let output = nnc(&["check", "examples/does_not_exist.nn"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read examples/does_not_exist.nn"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn weights_lists_names_shapes_and_kinds() {
    let output = nnc(&["weights", "examples/resnet18.nn"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("layer2.0.downsample.0.weight"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("bn1.running_var ") && line.ends_with("buffer")),
        "{stdout}"
    );
    assert!(stdout.contains("11,689,512 parameters"), "{stdout}");
}

#[test]
fn run_matches_the_fixture_and_writes_npy() {
    let output_path =
        std::env::temp_dir().join(format!("nnc-cli-{}-logits.npy", std::process::id()));
    let output = nnc(&[
        "run",
        "tests/fixtures/mlp/model.nn",
        "--weights",
        "tests/fixtures/mlp/weights.safetensors",
        "--input",
        "tests/fixtures/mlp/input_x.npy",
        "--output",
        output_path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read(&output_path).unwrap();
    assert!(written.starts_with(b"\x93NUMPY"));
    std::fs::remove_file(output_path).unwrap();

    let output = nnc(&[
        "run",
        "examples/mlp.nn",
        "--random-weights",
        "3",
        "--input",
        "x=tests/fixtures/mlp/input_x.npy",
    ]);
    // The fixture has batch 2 and the example batch 1: a clear error, not a panic.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the input `x` must be f32[1, 784], but it is f32[2, 784]"),
        "{stderr}"
    );
}

#[test]
fn run_reports_bad_weights_files_by_tensor_name() {
    let folder = std::env::temp_dir().join(format!("nnc-cli-weights-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let good =
        std::fs::read(workspace_root().join("tests/fixtures/mlp/weights.safetensors")).unwrap();
    let truncated = folder.join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let run = |weights: &str| {
        nnc(&[
            "run",
            "tests/fixtures/mlp/model.nn",
            "--weights",
            weights,
            "--input",
            "tests/fixtures/mlp/input_x.npy",
        ])
    };

    let output = run(truncated.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is not a valid safetensors file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Another model's weights: every missing and unexpected tensor is named.
    let output = run("tests/fixtures/resnet_block/weights.safetensors");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing tensor `fc1.weight` of shape [256, 784]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unexpected tensor `layer2.0.conv1.weight`"),
        "{stderr}"
    );

    let output = run(folder.join("absent.safetensors").to_str().unwrap());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the weights file"));
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn weights_check_refuses_unused_tensors_unless_allowed_and_lists_them() {
    // The first layer of the mlp fixture: its weights file also holds `fc2`, unused here.
    let folder = std::env::temp_dir().join(format!("nnc-cli-unused-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let model = folder.join("first_layer.nn");
    std::fs::write(
        &model,
        "network first(x: f32[1, 784]) -> (h: f32[1, 256]) {\n    h = linear(x, 256) as fc1\n}\n",
    )
    .unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "weights",
            model.to_str().unwrap(),
            "--check",
            "tests/fixtures/mlp/weights.safetensors",
        ];
        args.extend(extra);
        nnc(&args)
    };

    let output = check(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unexpected tensor `fc2.weight`"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass --allow-unused"), "{stderr}");

    let output = check(&["--allow-unused"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: ignored `fc2.bias` of shape [10]: the network has no such weight"),
        "{stderr}"
    );
    assert!(stderr.contains("note: ignored `fc2.weight`"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("holds every weight"));
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn run_and_weights_take_a_gguf_file() {
    let output = nnc(&[
        "weights",
        "tests/fixtures/gguf/tiny_llama.nn",
        "--check",
        "tests/fixtures/gguf/tiny_llama.gguf",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("tests/fixtures/gguf/tiny_llama.gguf holds every weight"),
        "{stdout}"
    );

    let folder = std::env::temp_dir().join(format!("nnc-cli-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let tokens = folder.join("tokens.npy");
    // An i64[1, 4] .npy file: header, then the little-endian ids.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 4), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    for token in [3i64, 1, 4, 15] {
        npy.extend(token.to_le_bytes());
    }
    std::fs::write(&tokens, npy).unwrap();
    let output = nnc(&[
        "run",
        "tests/fixtures/gguf/tiny_llama.nn",
        "--weights",
        "tests/fixtures/gguf/tiny_llama.gguf",
        "--input",
        tokens.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("logits: f32[1, 4, 16]"), "{stdout}");

    // A truncated GGUF file is a clear error naming the file.
    let good = std::fs::read(workspace_root().join("tests/fixtures/gguf/tiny_llama.gguf")).unwrap();
    let truncated = folder.join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let output = nnc(&[
        "weights",
        "tests/fixtures/gguf/tiny_llama.nn",
        "--check",
        truncated.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("truncated.gguf is not a valid GGUF file: tensor `"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn calibrate_then_run_in_int8() {
    let folder = std::env::temp_dir().join(format!("nnc-cli-int8-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let scales = folder.join("scales.json");
    let scales = scales.to_str().unwrap();
    let model = "tests/fixtures/resnet_block/model.nn";
    let weights = "tests/fixtures/resnet_block/weights.safetensors";
    let input = "tests/fixtures/resnet_block/input_x.npy";
    let output = nnc(&[
        "calibrate",
        model,
        "--weights",
        weights,
        "--input",
        input,
        input,
        "-o",
        scales,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("calibrated 3 convolution inputs on 2 samples"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(scales).unwrap();
    for layer in ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"] {
        assert!(json.contains(&format!("\"{layer}\"")), "{json}");
    }

    // int8 without a calibration, and a calibration without int8: errors that say what to do.
    let output = nnc(&[
        "run",
        model,
        "--weights",
        weights,
        "--input",
        input,
        "--quantize",
        "int8",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("nnc calibrate"), "{stderr}");
    let output = nnc(&[
        "run",
        model,
        "--weights",
        weights,
        "--input",
        input,
        "--quantize",
        "q8_0",
        "--calibration",
        scales,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--calibration is for --quantize int8"),
        "{stderr}"
    );

    let output = nnc(&[
        "run",
        model,
        "--weights",
        weights,
        "--input",
        input,
        "--quantize",
        "int8",
        "--calibration",
        scales,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("y: f32[1, 32, 8, 8]"), "{stdout}");

    // A sample of the wrong shape is named.
    let output = nnc(&[
        "calibrate",
        model,
        "--weights",
        weights,
        "--input",
        "tests/fixtures/mlp/input_x.npy",
        "-o",
        scales,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("input_x.npy has shape [2, 784]"),
        "{stderr}"
    );
    std::fs::remove_dir_all(folder).unwrap();
}

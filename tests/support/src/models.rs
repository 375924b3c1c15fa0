//! The one walk over the models the tests run: each folder is read once here, filtered the same
//! way and sorted by name, so every test sees the same models in the same order.

use std::path::{Path, PathBuf};

use crate::header::{self, HeaderError};

/// The folder a test model comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `examples/*.nn`: the bundled models, at their real sizes.
    Examples,
    /// `tests/passes/*.nn`: small inputs that show one optimization pass each.
    PassInputs,
    /// `tests/fixtures/*/model.nn`: models with weights, inputs and ONNX Runtime's outputs beside
    /// them.
    Fixtures,
    /// `tests/codegen/models/*.nn`: models written for the generated-code tests.
    CodegenModels,
}

impl Collection {
    /// The folder, relative to the workspace root.
    pub fn folder(self) -> &'static str {
        match self {
            Collection::Examples => "examples",
            Collection::PassInputs => "tests/passes",
            Collection::Fixtures => "tests/fixtures",
            Collection::CodegenModels => "tests/codegen/models",
        }
    }
}

/// One `.nn` model a test runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestModel {
    /// The file stem (`bert_encoder`), or the folder name for a fixture (`tiny_lm`).
    pub name: String,
    /// The `.nn` file.
    pub path: PathBuf,
    pub collection: Collection,
}

impl TestModel {
    /// The source text; panics with the path when it cannot be read.
    pub fn source(&self) -> String {
        std::fs::read_to_string(&self.path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", self.path.display()))
    }

    /// The dimension overrides of the file's `test-dims` header line (see [`crate::header`]), for
    /// `FrontendOptions::dims`; panics with the path on a malformed line.
    pub fn test_dims(&self) -> Vec<(String, i64)> {
        self.try_test_dims()
            .unwrap_or_else(|error| panic!("{}: {error}", self.path.display()))
    }

    /// [`TestModel::test_dims`], with a malformed line as an error.
    pub fn try_test_dims(&self) -> Result<Vec<(String, i64)>, HeaderError> {
        header::test_dims(&self.source())
    }

    /// The folder holding a fixture's weights, inputs and expected outputs; `None` for models of
    /// the other collections.
    pub fn fixture_folder(&self) -> Option<&Path> {
        match self.collection {
            Collection::Fixtures => self.path.parent(),
            Collection::Examples | Collection::PassInputs | Collection::CodegenModels => None,
        }
    }
}

/// The workspace root, where `Cargo.lock` and `examples/` are.
pub fn workspace_root() -> PathBuf {
    // This crate lives in `tests/support`, two levels below the root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support is two levels below the workspace root")
        .to_path_buf()
}

/// Every `.nn` file directly inside `folder`, sorted; panics when there is none, since a test
/// that finds no input would pass without testing anything.
pub fn nn_files(folder: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(folder)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", folder.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "nn"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .nn files in {}", folder.display());
    files
}

/// The bundled examples, `examples/*.nn`.
pub fn examples() -> Vec<TestModel> {
    files_of(Collection::Examples)
}

/// The example `name` (without `.nn`); panics when there is no such file.
pub fn example(name: &str) -> TestModel {
    let path = workspace_root()
        .join(Collection::Examples.folder())
        .join(format!("{name}.nn"));
    assert!(path.is_file(), "no example {}", path.display());
    TestModel {
        name: name.to_string(),
        path,
        collection: Collection::Examples,
    }
}

/// The inputs of the pass snapshots, `tests/passes/*.nn`.
pub fn pass_inputs() -> Vec<TestModel> {
    files_of(Collection::PassInputs)
}

/// The models written for the generated-code tests, `tests/codegen/models/*.nn`.
pub fn codegen_models() -> Vec<TestModel> {
    files_of(Collection::CodegenModels)
}

/// The ONNX Runtime fixtures: every folder of `tests/fixtures` with a `model.nn`, sorted by name.
pub fn fixtures() -> Vec<TestModel> {
    let folder = workspace_root().join(Collection::Fixtures.folder());
    let entries = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", folder.display()));
    let mut models: Vec<TestModel> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.join("model.nn").is_file())
        .map(|path| TestModel {
            name: file_name(&path),
            path: path.join("model.nn"),
            collection: Collection::Fixtures,
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!models.is_empty(), "no fixtures in {}", folder.display());
    models
}

/// The models of a collection whose files sit directly in its folder.
fn files_of(collection: Collection) -> Vec<TestModel> {
    nn_files(&workspace_root().join(collection.folder()))
        .into_iter()
        .map(|path| TestModel {
            name: path
                .file_stem()
                .map(|stem| stem.to_string_lossy().to_string())
                .unwrap_or_default(),
            path,
            collection,
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collection_has_models_and_every_header_reads() {
        let all = [examples(), pass_inputs(), fixtures(), codegen_models()];
        for models in &all {
            assert!(!models.is_empty());
            for model in models {
                assert!(model.path.is_file(), "{}", model.path.display());
                model.try_test_dims().unwrap_or_else(|error| {
                    panic!("{}: {error}", model.path.display());
                });
            }
        }
        assert!(examples().contains(&example("mlp")));
    }
}

//! The local sentence-embedding model: all-MiniLM-L6-v2 (BERT, 384
//! dimensions) on the CPU with candle, from a folder holding its
//! `config.json`, `tokenizer.json` and `model.safetensors`.
//!
//! Two details decide whether the vectors mean anything: the shipped
//! tokenizer pads every input to 128 tokens, so padding is reset to "longest
//! in the batch"; and the token vectors are averaged over real tokens only
//! (the attention mask), as sentence-transformers does. Without both, every
//! pair of sentences scores about 0.8.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::fetch::{self, ModelFile};

/// The longest input the model was trained on (sentence-transformers'
/// `max_seq_length`); longer text is cut.
const MAX_TOKENS: usize = 256;

/// A loaded all-MiniLM-L6-v2.
pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl LocalModel {
    /// Loads the model from `dir`, checking each file against its pinned
    /// SHA-256 first, so a truncated or altered file is named rather than
    /// producing wrong vectors.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let read = |file: &ModelFile| -> Result<Vec<u8>, String> {
            let path = dir.join(file.name);
            let bytes = std::fs::read(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "{} is missing (run `metamcp models fetch`, or set META_MCP_MODEL_DIR)",
                        path.display()
                    )
                } else {
                    format!("cannot read {}: {e}", path.display())
                }
            })?;
            let sum = fetch::sha256_hex(&bytes);
            if sum != file.sha256 {
                return Err(format!(
                    "{} is corrupt: its SHA-256 is {sum}, expected {} (run `metamcp models fetch` again)",
                    path.display(),
                    file.sha256
                ));
            }
            Ok(bytes)
        };
        let [config_file, tokenizer_file, weights_file] = &fetch::FILES;
        let config: Config =
            serde_json::from_slice(&read(config_file)?).map_err(|e| format!("config.json: {e}"))?;
        let mut tokenizer = Tokenizer::from_bytes(read(tokenizer_file)?)
            .map_err(|e| format!("tokenizer.json: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| format!("tokenizer.json: {e}"))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(read(weights_file)?, DType::F32, &device)
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let model = BertModel::load(vb, &config).map_err(|e| format!("model.safetensors: {e}"))?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// Unit-length sentence vectors of `texts`, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts)
            .map_err(|e| format!("embedding failed: {e}"))
    }

    fn forward(
        &self,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let len = encodings.first().map(|e| e.len()).unwrap_or(0);
        let n = encodings.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens: padding must not pull the average.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model folder of the test environment, if it has one.
    fn model_dir() -> Option<std::path::PathBuf> {
        match std::env::var_os("METAMCP_TEST_MODEL_DIR") {
            Some(dir) => Some(dir.into()),
            None if std::env::var_os("CI").is_some() => {
                panic!("CI must provide METAMCP_TEST_MODEL_DIR (scripts/install-test-deps.sh)")
            }
            None => {
                eprintln!(
                    "SKIPPED: METAMCP_TEST_MODEL_DIR is not set (eval \"$(scripts/install-test-deps.sh)\")"
                );
                None
            }
        }
    }

    #[test]
    fn reference_similarity_matches_sentence_transformers() {
        let Some(dir) = model_dir() else { return };
        let model = LocalModel::load(&dir).expect("model loads");
        let v = model
            .embed(&[
                "A man is eating food.".to_owned(),
                "A man is eating a piece of bread.".to_owned(),
                "The new movie is awesome.".to_owned(),
            ])
            .expect("embeds");
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert_eq!(v[0].len(), 384);
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        let related = cos(&v[0], &v[1]);
        assert!(
            (related - 0.7553).abs() < 0.001,
            "reference cosine 0.7553, got {related}"
        );
        let unrelated = cos(&v[0], &v[2]);
        assert!(unrelated < 0.2, "unrelated pair scored {unrelated}");
        // Batched and single encodings agree: padding does not leak in.
        let single = model.embed(&["A man is eating food.".to_owned()]).unwrap();
        assert!(cos(&single[0], &v[0]) > 0.9999);
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let Some(dir) = model_dir() else { return };
        let tmp = tempfile::tempdir().unwrap();
        for f in &fetch::FILES {
            std::fs::copy(dir.join(f.name), tmp.path().join(f.name)).unwrap();
        }
        std::fs::write(tmp.path().join("model.safetensors"), b"not a model").unwrap();
        let err = LocalModel::load(tmp.path()).err().expect("refused");
        assert!(err.contains("model.safetensors is corrupt"), "{err}");
        std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
        let err = LocalModel::load(tmp.path()).err().expect("refused");
        assert!(err.contains("tokenizer.json is missing"), "{err}");
    }
}

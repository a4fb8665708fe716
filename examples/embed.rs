//! Embeds text with the local model, for offline search experiments
//! (`bench/embed_eval.py`): one JSON string per line on stdin, the unit
//! vectors as little-endian f32 rows (384 per text) to the file given.
//!
//!     cargo run --release --example embed -- MODEL_DIR OUT.f32 < texts.jsonl

#[cfg(feature = "semantic")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{BufRead, Write};
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: embed MODEL_DIR OUT.f32 < texts.jsonl".into());
    };
    let model = metamcp::search::model::LocalModel::load(std::path::Path::new(&dir))?;
    let texts: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|line| Ok(serde_json::from_str(&line?)?))
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let started = std::time::Instant::now();
    for batch in texts.chunks(64) {
        for v in model.embed(batch)? {
            for x in v {
                file.write_all(&x.to_le_bytes())?;
            }
        }
    }
    file.flush()?;
    eprintln!("{} texts in {:.1}s", texts.len(), started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(not(feature = "semantic"))]
fn main() {
    eprintln!("needs the `semantic` feature");
}

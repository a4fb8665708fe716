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
    if std::env::var_os("EMBED_TIMINGS").is_some() {
        // One text per forward pass, as a search query is embedded: the
        // distribution of the time each takes.
        let mut ms: Vec<f64> = texts
            .iter()
            .map(|t| {
                let started = std::time::Instant::now();
                model
                    .embed(std::slice::from_ref(t))
                    .map(|_| started.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
        eprintln!(
            "{} texts one by one: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            ms[ms.len() - 1]
        );
        return Ok(());
    }
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
    eprintln!(
        "{} texts in {:.1}s",
        texts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "semantic"))]
fn main() {
    eprintln!("needs the `semantic` feature");
}

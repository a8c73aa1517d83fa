//! One measured quantity over a benchmark's runs, with failed runs left out of the figures and
//! counted, and ratios between two such quantities.

use std::time::Duration;

use crate::Percentiles;

/// One measured quantity: samples and failures.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub samples: Vec<f64>,
    pub failed: usize,
}

impl Series {
    /// Keeps a good run's value; counts (and prints) a failed one.
    pub fn record(&mut self, r: Result<f64, String>, what: &str) {
        match r {
            Ok(v) => self.samples.push(v),
            Err(e) => {
                self.failed += 1;
                println!("  {what}: run failed: {e}");
            }
        }
    }

    /// Prints one row (p50/p95/p99, then p90 and the failures) and returns the percentiles,
    /// or says that no run succeeded.
    pub fn report(&self, name: &str, unit: &str) -> Option<Percentiles> {
        if self.samples.is_empty() {
            println!("{name:<48} no successful run ({} failed)", self.failed);
            return None;
        }
        let mut v = self.samples.clone();
        let p = Percentiles::of(&mut v);
        let p90 = v[((0.9 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        println!(
            "{}  p90 {p90:>9.2}{}",
            p.row(name, unit),
            if self.failed > 0 {
                format!("  ({} failed)", self.failed)
            } else {
                String::new()
            }
        );
        Some(p)
    }
}

/// Prints `a / b` at p50, p95 and p99, when both have figures.
pub fn ratio(name: &str, a: Option<Percentiles>, b: Option<Percentiles>) {
    if let (Some(a), Some(b)) = (a, b) {
        println!(
            "ratio {name}: p50 {:.3}  p95 {:.3}  p99 {:.3}",
            a.p50 / b.p50,
            a.p95 / b.p95,
            a.p99 / b.p99
        );
    }
}

/// Milliseconds, as the figures are printed.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

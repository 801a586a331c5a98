//! `deepfactor eval`: score ranked lists against a ground truth.

use anyhow::Context;
use clap::Args;
use deepfactor::eval::{
    evaluate, Evaluation, GroundTruth, GroundTruthKind, Protocol, Provenance, Rankings,
    ResultsRecord, Setup,
};
use std::path::PathBuf;

/// Arguments of `deepfactor eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ranking file: one line per query, the query name then the ranked database image names,
    /// separated by spaces.
    #[arg(long, value_name = "FILE")]
    ranking: PathBuf,
    /// Ground truth: an Oxford-layout folder (gt/ and jpg/), a revisited gnd_*.pkl, or a folder
    /// holding one.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// classic (Oxford/Paris mAP), revisited (Easy/Medium/Hard mAP and mP@1,5,10) or map@K
    /// (AP truncated at K). Default: revisited for revisited ground truth, classic otherwise.
    #[arg(long, value_name = "PROTOCOL")]
    protocol: Option<Protocol>,
    /// Print the results record as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `deepfactor eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let gt = GroundTruth::load(&args.gt)
        .with_context(|| format!("loading ground truth {}", args.gt.display()))?;
    let rankings = Rankings::load(&args.ranking)?;
    let protocol = args.protocol.unwrap_or(match gt.kind() {
        GroundTruthKind::Revisited => Protocol::Revisited,
        GroundTruthKind::Classic => Protocol::Classic,
    });
    let evaluation = evaluate(&gt, &rankings, protocol)?;
    if args.json {
        println!(
            "{}",
            ResultsRecord::new(&evaluation, Provenance::default()).to_json()
        );
    } else {
        print!("{}", table(&evaluation));
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn table(e: &Evaluation) -> String {
    let width = e
        .queries
        .iter()
        .map(|q| q.query.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    match &e.revisited {
        None => {
            let head = match e.protocol {
                Protocol::MapAt(k) => format!("AP@{k}"),
                _ => "AP".to_string(),
            };
            s.push_str(&format!("{:<width$}  {head:>7}\n", "query"));
            for q in &e.queries {
                s.push_str(&format!("{:<width$}  {:>7}\n", q.query, pct(q.ap)));
            }
            let name = match e.protocol {
                Protocol::MapAt(k) => format!("mAP@{k}"),
                _ => "mAP".to_string(),
            };
            s.push_str(&format!("{:<width$}  {:>7.2}\n", name, e.map));
            s.push_str(&format!(
                "{} protocol on {}: {} of {} queries have relevant images\n",
                e.protocol,
                e.dataset,
                e.evaluated,
                e.queries.len()
            ));
        }
        Some(r) => {
            s.push_str(&format!(
                "{:<width$}  {:>7}  {:>7}  {:>7}\n",
                "query", "E", "M", "H"
            ));
            for (i, q) in e.queries.iter().enumerate() {
                s.push_str(&format!("{:<width$}", q.query));
                for setup in Setup::ALL {
                    s.push_str(&format!("  {:>7}", pct(r.setup(setup).queries[i].ap)));
                }
                s.push('\n');
            }
            s.push_str(&format!("{:<width$}", "mAP"));
            for setup in Setup::ALL {
                s.push_str(&format!("  {:>7}", pct(r.setup(setup).map)));
            }
            s.push('\n');
            for (j, &(k, _)) in r.medium.mp_at_k.iter().enumerate() {
                s.push_str(&format!("{:<width$}", format!("mP@{k}")));
                for setup in Setup::ALL {
                    s.push_str(&format!("  {:>7}", pct(r.setup(setup).mp_at_k[j].1)));
                }
                s.push('\n');
            }
            s.push_str(&format!(
                "revisited protocol on {} ({} queries); '-': no positives in that setup\n",
                e.dataset,
                e.queries.len()
            ));
        }
    }
    s
}

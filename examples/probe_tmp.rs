use deepfactor::probe::*;
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data = FashionMnist::load(DEFAULT_DATA_DIR)?;
    let mut cfg = TrainConfig::new(args[1].parse()?);
    cfg.p = args[2].parse()?;
    cfg.train_subset = Some(args[3].parse()?);
    cfg.batch_size = args[4].parse()?;
    cfg.optimizer.lr = args[5].parse()?;
    cfg.max_epochs = args[6].parse()?;
    let t = std::time::Instant::now();
    let (_net, rec) = train(
        &data,
        &cfg,
        &candle_core::Device::Cpu,
        &mut |e| {
            eprintln!(
                "epoch {} loss {:.4} acc {:.4} t {:.1}",
                e.epoch,
                e.loss,
                e.running_accuracy,
                t.elapsed().as_secs_f64()
            );
        },
        None,
    )?;
    println!(
        "epochs {} fitted {} train {:.4} test_err {:.4} s {:.1}",
        rec.epochs, rec.fitted, rec.train_accuracy, rec.test_error, rec.seconds
    );
    Ok(())
}

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use deepfactor::probe::*;
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bs: usize = args[1].parse()?;
    let arch: Arch = args[2].parse()?;
    let dev = Device::Cpu;
    let net = Net::init(arch, 0, &dev)?;
    let p = ParamsAdamW {
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(net.vars(), p.clone())?;
    let mut fused = FusedAdamW::new(net.vars(), p)?;
    let x = Tensor::randn(0f32, 1.0, (bs, 784), &dev)?;
    let y = Tensor::zeros(bs, DType::U32, &dev)?;
    let (mut tf, mut tb, mut to, mut tu) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let logits = net.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let _ = loss.to_scalar::<f32>()?;
        tf += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let g = loss.backward()?;
        tb += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        opt.step(&g)?;
        to += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        fused.step(&g)?;
        tu += t.elapsed().as_secs_f64();
    }
    println!(
        "bs {bs}: fwd {:.1} ms bwd {:.1} ms candle-adamw {:.1} ms fused {:.1} ms",
        tf * 200.0,
        tb * 200.0,
        to * 200.0,
        tu * 200.0
    );
    Ok(())
}

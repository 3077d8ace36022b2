use std::time::Duration;
use super::harness::*;
use crate::Config;

#[test]
fn scratch_replay() {
    for (jitter, loss) in [(3u64, 16u64), (0, 16), (3, 0)] {
        let file = content(23184);
        let mut sim = Sim::new(Config::default(), files(&[("f", file.clone())]));
        let seed = 13954989625241062773u64;
        sim.loss = random_loss(seed, loss);
        sim.jitter = Some(random_jitter(seed ^ 2, Duration::from_millis(jitter)));
        let mut spec = ClientSpec::new("f", &[("tsize", "0"), ("blksize", "8"), ("windowsize", "4")]);
        spec.retry_interval = Duration::from_secs(1);
        spec.max_retries = 10;
        sim.add_client(spec);
        sim.run(Duration::from_secs(5000));
        let s = sim.server.stats();
        println!("jitter {jitter} loss {loss}: {:?} done {:?} data {} timer {} dup {} partial {}", sim.elapsed(), sim.clients[0].result.as_ref().map(|r| matches!(r, ClientResult::Received(_))), s.data_sent, s.retransmits_timeout, s.retransmits_duplicate, s.retransmits_partial_ack);
    }
}

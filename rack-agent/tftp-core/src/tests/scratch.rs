use std::time::Duration;
use super::harness::*;
use crate::{Config, Packet, Event, Local};

#[test]
fn scratch_replay() {
    let file = content(3584);
    let mut sim = Sim::new(Config::default(), files(&[("f", file.clone())]));
    let seed = 8384145970231207237u64;
    sim.duplication = Some(random_duplication(seed, 20));
    sim.jitter = Some(random_jitter(seed ^ 2, Duration::from_millis(63)));
    sim.fifo = true;
    for (i, w) in [None, None, Some("7")].iter().enumerate() {
        let mut o = vec![("tsize", "0")];
        if let Some(w) = w { o.push(("windowsize", w)); }
        let mut spec = ClientSpec::new("f", &o);
        spec.start_at = Duration::from_millis(i as u64);
        spec.retry_interval = Duration::from_secs(1);
        spec.max_retries = 10;
        sim.add_client(spec);
    }
    sim.run(Duration::from_secs(100));
    println!("{}", sim.server.dump());
    for (at, e) in &sim.events { println!("{at:?} {e:?}"); }
    println!("poll_timeout {:?}", sim.server.poll_timeout().map(|t| t - sim.base));
    let addr = sim.clients[2].addr; println!("{:?}", sim.clients.iter().map(|c| c.result.as_ref().map(|r| matches!(r, ClientResult::Received(_)))).collect::<Vec<_>>());
    let id = sim.events.iter().find_map(|(_, e)| match e { Event::Started{id, client, ..} if *client == addr => Some(Local::Transfer(*id)), _ => None }).unwrap();
    let mut log: Vec<(Duration, String)> = Vec::new();
    for s in sim.sent.iter().filter(|s| s.local == id) { if let Packet::Data{block,..} = s.packet { log.push((s.at, format!("  -> DATA {block}{}", if s.dropped {" (lost)"} else {""}))) } else { log.push((s.at, format!("  -> {:?}", s.packet))) } }
    for (at, l, _, p) in &sim.received { if *l == id { log.push((*at, format!("<-   {:?}", p))) } }
    log.sort_by_key(|l| l.0);
    for (at, l) in log { println!("{:>10.3}ms {l}", at.as_secs_f64()*1000.0); }
}

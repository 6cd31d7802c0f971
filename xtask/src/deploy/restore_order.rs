//! The order of a fleet's `db restore` (pure): which host is told `begin`, `go` or to stop, from
//! what each job said. The talking is in [`crate::deploy::restore`].

use crate::contract::{Message, Phase};

/// What a fleet's restore sends next (pure), from each job's phase and end: `begin` to the
/// primary first (it verifies, then waits for `go`); once it waits, `begin` to the others
/// (they stop their units and wait); once they all wait, `go` to the primary (it loads and
/// starts); once it ended, `go` to the others if it restored, else an abort. A host that ends
/// before the primary was told `go` aborts the others (nothing was loaded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Order {
    pub primary_begun: bool,
    pub others_begun: bool,
    pub primary_go: bool,
    pub others_told: bool,
}

/// A host as the order sees it: its phase, whether its job is over, and whether it restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub phase: Option<Phase>,
    /// Over: `Some(restored?, RESULT: REASON)`.
    pub ended: Option<(bool, String)>,
}

impl Order {
    pub fn next(&mut self, p: usize, hosts: &[Seen]) -> Vec<(usize, Result<Message, String>)> {
        let others = || (0..hosts.len()).filter(move |i| *i != p);
        let open = |i: &usize| hosts[*i].ended.is_none();
        if self.others_told {
            return Vec::new();
        }
        if let Some((restored, how)) = &hosts[p].ended {
            self.others_told = true;
            let send = if *restored {
                Ok(Message::Go)
            } else {
                Err(format!("the primary {} ended {how}", hosts[p].name))
            };
            return others().filter(open).map(|i| (i, send.clone())).collect();
        }
        if !self.primary_go {
            if let Some(i) = others().find(|i| hosts[*i].ended.is_some()) {
                self.others_told = true;
                let why = format!(
                    "{} ended {}",
                    hosts[i].name,
                    hosts[i].ended.as_ref().map_or("", |e| e.1.as_str())
                );
                return (0..hosts.len())
                    .filter(open)
                    .map(|i| (i, Err(why.clone())))
                    .collect();
            }
        }
        if !self.primary_begun {
            self.primary_begun = true;
            return vec![(p, Ok(Message::Begin))];
        }
        if !self.others_begun && hosts[p].phase == Some(Phase::AwaitingGo) {
            self.others_begun = true;
            return others().map(|i| (i, Ok(Message::Begin))).collect();
        }
        if self.others_begun
            && !self.primary_go
            && others().all(|i| hosts[i].phase == Some(Phase::AwaitingGo))
        {
            self.primary_go = true;
            return vec![(p, Ok(Message::Go))];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, phase: Option<Phase>, ended: Option<bool>) -> Seen {
        Seen {
            name: name.into(),
            phase,
            ended: ended.map(|ok| {
                let how = if ok { "restored: " } else { "failed: it broke" };
                (ok, how.to_string())
            }),
        }
    }

    #[test]
    fn a_fleet_is_ordered_primary_verifies_others_stop_primary_loads_others_follow() {
        let go = Some(Phase::AwaitingGo);
        let begin = Some(Phase::AwaitingBegin);
        let mut o = Order::default();
        // The primary is the second host.
        let mut hosts = vec![
            host("a", begin, None),
            host("p", begin, None),
            host("b", begin, None),
        ];
        assert_eq!(o.next(1, &hosts), vec![(1, Ok(Message::Begin))]);
        assert_eq!(o.next(1, &hosts), vec![], "the primary verifies first");
        hosts[1].phase = go;
        assert_eq!(
            o.next(1, &hosts),
            vec![(0, Ok(Message::Begin)), (2, Ok(Message::Begin))]
        );
        hosts[0].phase = go;
        assert_eq!(o.next(1, &hosts), vec![], "b has not stopped yet");
        hosts[2].phase = go;
        assert_eq!(o.next(1, &hosts), vec![(1, Ok(Message::Go))]);
        assert_eq!(o.next(1, &hosts), vec![]);
        hosts[1] = host("p", go, Some(true));
        assert_eq!(
            o.next(1, &hosts),
            vec![(0, Ok(Message::Go)), (2, Ok(Message::Go))]
        );
        assert_eq!(o.next(1, &hosts), vec![], "said once");
    }

    #[test]
    fn a_fleet_goes_back_when_the_primary_fails_or_a_host_ends_early() {
        let go = Some(Phase::AwaitingGo);
        // The primary refuses the snapshot: the others, never begun, are aborted.
        let mut o = Order {
            primary_begun: true,
            ..Order::default()
        };
        let hosts = vec![host("p", None, Some(false)), host("b", None, None)];
        let sent = o.next(0, &hosts);
        assert_eq!(sent.len(), 1);
        assert!(
            matches!(&sent[0], (1, Err(why)) if why.starts_with("the primary p ended failed: it broke"))
        );
        // A host fails to stop its units: everyone still open is aborted, the primary too.
        let mut o = Order {
            primary_begun: true,
            others_begun: true,
            ..Order::default()
        };
        let hosts = vec![
            host("p", go, None),
            host("b", None, Some(false)),
            host("c", go, None),
        ];
        let sent = o.next(0, &hosts);
        assert_eq!(sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 2]);
        assert!(sent
            .iter()
            .all(|(_, m)| matches!(m, Err(w) if w.starts_with("b ended failed"))));
        // After the primary's go, only its end decides.
        let mut o = Order {
            primary_begun: true,
            others_begun: true,
            primary_go: true,
            others_told: false,
        };
        let hosts = vec![host("p", go, None), host("b", None, Some(false))];
        assert_eq!(o.next(0, &hosts), vec![]);
    }
}

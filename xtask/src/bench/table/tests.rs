//! The table's unit tests: verdicts, floors, the layout.

use super::*;

fn row(key: Key, target: Target, b: &[f64], x: &[f64]) -> Row {
    let mut r = Row::new(
        key,
        "incremental deploy all",
        Unit::Secs,
        target,
        Floor::None,
    );
    r.baseline = b.to_vec();
    r.xtask = x.to_vec();
    r.want_baseline = b.len();
    r.want_xtask = x.len();
    r
}

#[test]
fn medians_and_ratios() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    // A NaN is not skipped: there is no median of a set with a missing figure.
    assert_eq!(median(&[1.0, f64::NAN, 3.0]), None);
    assert_eq!(ratio(&[2.0, 2.0, 2.0], &[8.0, 8.0, 9.0]), Some(0.25));
    assert_eq!(ratio(&[2.0], &[]), None);
    assert_eq!(ratio(&[2.0], &[0.0]), None);
}

#[test]
fn samples_must_be_complete_and_finite() {
    let mut r = row(Key::Incremental, Target::None, &[1.0, 2.0], &[1.0, 2.0]);
    assert!(r.check().is_ok());
    r.want_xtask = 3;
    let e = r.check().unwrap_err().to_string();
    assert!(e.contains("2 of 3 xtask runs"), "{e}");
    r.want_xtask = 2;
    r.baseline[1] = f64::NAN;
    let e = r.check().unwrap_err().to_string();
    assert!(e.contains("a baseline run produced no figure"), "{e}");
    assert!(sample(f64::NAN, "wrk").is_err());
    assert_eq!(sample(2.5, "x").unwrap(), 2.5);
}

#[test]
fn targets_are_judged_on_the_xtask_median() {
    let rows = vec![
        row(
            Key::Incremental,
            Target::MaxAndRatio(3.0, 0.25),
            &[12.0, 12.0, 12.0],
            &[2.9, 2.8, 3.5],
        ),
        row(
            Key::ChecksAgain,
            Target::Relative {
                of: Key::Incremental,
                factor: 1.3,
                plus: 0.0,
            },
            &[],
            &[3.8, 3.7, 3.9],
        ),
        row(
            Key::FailedDeploy,
            Target::EverySampleMax(0.0),
            &[0.0],
            &[0.0, 1.0, 0.0],
        ),
    ];
    let v = judge(&rows[0], &rows, None);
    assert_eq!(v.met, Some(true), "{v:?}");
    assert_eq!(v.text, "<= 3.00 s, <= 0.25x");
    let v = judge(&rows[1], &rows, None);
    // 1.3 x 2.9 = 3.77 < 3.8.
    assert_eq!(v.met, Some(false), "{v:?}");
    assert_eq!(v.text, "<= 1.3x [incremental] = 3.77 s");
    // One failed request in one run misses a zero target, whatever the median.
    assert_eq!(judge(&rows[2], &rows, None).met, Some(false));
    // A target relative to a row that was not measured cannot be judged.
    let alone = vec![rows[1].clone()];
    let v = judge(&alone[0], &alone, None);
    assert_eq!((v.met, v.text.as_str()), (None, "<= 1.3x [incremental]"));
}

#[test]
fn floors_are_composed_from_the_parts() {
    let p = FloorParts {
        handshake: 0.5,
        command: 0.05,
        restart_all: 0.8,
        restart_backend: 0.6,
        build: 4.0,
        checks: None,
        pg_dump: None,
        db_bytes: None,
    };
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
    assert!(close(Floor::Incremental.value(&p), 4.85));
    assert!(close(Floor::BackendRestart.value(&p), 1.15));
    assert!(close(Floor::Rollback.value(&p), 1.35));
    assert!(close(Floor::Look.value(&p), 0.5));
    assert_eq!(Floor::Checks.value(&p), None);
    // The handshake overlaps the build or the checks, whichever is longer counts.
    let slow_link = FloorParts {
        handshake: 5.0,
        checks: Some(20.0),
        ..p
    };
    assert!(close(Floor::Incremental.value(&slow_link), 5.85));
    assert!(close(Floor::Checks.value(&slow_link), 20.85));
    assert_eq!(Floor::Exactly(1).value(&p), Some(1.0));
    assert_eq!(Floor::None.value(&p), None);
    // The database's floors only where its phase measured them.
    assert_eq!(Floor::PgDump.value(&p), None);
    assert_eq!(Floor::BackendRestartPgDump.value(&p), None);
    let db = FloorParts {
        pg_dump: Some(2.0),
        db_bytes: Some(150e6),
        ..p
    };
    assert!(close(Floor::PgDump.value(&db), 2.0));
    assert!(close(Floor::BackendRestartPgDump.value(&db), 3.15));
    assert_eq!(Floor::DatabaseSize.value(&db), Some(150e6));
}

#[test]
fn a_command_that_counted_no_handshake_misses_the_target() {
    let mut h = Row::new(
        Key::Handshakes,
        "ssh handshakes per command",
        Unit::Count,
        Target::EverySample(1.0),
        Floor::Exactly(1),
    );
    h.xtask = vec![1.0, 0.0, 1.0];
    assert_eq!(
        judge(&h, &[], None).met,
        Some(false),
        "0 is not 'at most one'"
    );
    h.xtask = vec![1.0, 1.0];
    assert_eq!(judge(&h, &[], None).met, Some(true));
    // The old rule passed the 0.
    h.target = Target::EverySampleMax(1.0);
    h.xtask = vec![1.0, 0.0];
    assert_eq!(judge(&h, &[], None).met, Some(true));
}

#[test]
fn table_has_every_column_and_aligns() {
    let mut r = row(
        Key::Incremental,
        Target::MaxAndRatio(3.0, 0.25),
        &[13.8, 15.9, 17.3],
        &[9.2, 11.4, 13.7],
    );
    r.floor = Floor::Look;
    let mut h = Row::new(
        Key::Handshakes,
        "ssh handshakes per command",
        Unit::Count,
        Target::EverySample(1.0),
        Floor::Exactly(1),
    );
    h.xtask = vec![1.0, 1.0];
    h.baseline = vec![11.0, 11.0];
    h.want_xtask = 2;
    h.want_baseline = 2;
    let floors = [FloorParts {
        handshake: 0.75,
        command: 0.05,
        ..FloorParts::default()
    }];
    let t = render("title", &[r, h], &floors);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "title");
    for col in [
        "scenario",
        "baseline",
        "xtask median (min/max)",
        "ratio",
        "target",
        "floor",
        "samples",
    ] {
        assert!(lines[1].contains(col), "{}", lines[1]);
    }
    assert!(lines[2].starts_with("incremental deploy all "), "{t}");
    for cell in [
        "15.90 s",
        "11.40 s (9.20/13.70)",
        "0.72",
        "<= 3.00 s, <= 0.25x",
        "MISSED",
        "0.75 s",
        "3/3",
    ] {
        assert!(lines[2].contains(cell), "no {cell} in {}", lines[2]);
    }
    for cell in ["11", "1 (1/1)", "1 each", "met", "2/2"] {
        assert!(lines[3].contains(cell), "no {cell} in {}", lines[3]);
    }
    // Columns line up: every row's floor column ends at the same place as the header's.
    let end = |l: &str, s: &str| l.find(s).map(|i| i + s.len());
    assert_eq!(end(lines[1], "floor"), end(lines[2], "0.75 s"));
    let parts = render_floor_parts(&floors);
    assert!(
        parts.contains("ssh handshake with one command 0.75 s, one more command 0.05 s"),
        "{parts}"
    );
    assert!(parts.contains("local checks -"), "{parts}");
}

#[test]
fn a_floor_plus_target_is_judged_against_the_floor_measured() {
    let mut r = Row::new(
        Key::Exec,
        "exec -- true",
        Unit::Secs,
        Target::FloorPlus(0.15),
        Floor::Look,
    );
    r.xtask = vec![0.62, 0.58, 0.7];
    let v = judge(&r, &[], Some(0.5));
    assert_eq!(
        (v.met, v.text.as_str()),
        (Some(true), "<= floor + 0.15 s = 0.65 s")
    );
    assert_eq!(judge(&r, &[], Some(0.4)).met, Some(false));
    assert_eq!(judge(&r, &[], None).met, None);
}

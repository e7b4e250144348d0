//! A hundred no-op tasks for the `tasks` scenario: does the number of
//! tasks a worker serves change its throughput? Each has a tenth of the
//! no-op task's concurrency, so that a worker serving all of them has the
//! same thousand slots as one serving the no-op task alone.

use crate::tasks::Noop;

/// How many there are.
pub const COUNT: usize = 100;

/// The name of spread task `i` (`i < COUNT`).
pub fn name(i: usize) -> String {
    format!("bench.spread.{i:02}")
}

/// The names of all of them.
pub fn names() -> Vec<String> {
    (0..COUNT).map(name).collect()
}

macro_rules! spread_tasks {
    ($($module:ident => $name:literal,)*) => {
        $(
            #[allow(dead_code)]
            mod $module {
                use super::Noop;

                #[jobq::task(name = $name, concurrency = 10)]
                pub async fn run(job: Noop) -> Result<(), jobq::TaskError> {
                    let _ = job.n;
                    Ok(())
                }
            }
        )*
    };
}

spread_tasks! {
    s00 => "bench.spread.00",
    s01 => "bench.spread.01",
    s02 => "bench.spread.02",
    s03 => "bench.spread.03",
    s04 => "bench.spread.04",
    s05 => "bench.spread.05",
    s06 => "bench.spread.06",
    s07 => "bench.spread.07",
    s08 => "bench.spread.08",
    s09 => "bench.spread.09",
    s10 => "bench.spread.10",
    s11 => "bench.spread.11",
    s12 => "bench.spread.12",
    s13 => "bench.spread.13",
    s14 => "bench.spread.14",
    s15 => "bench.spread.15",
    s16 => "bench.spread.16",
    s17 => "bench.spread.17",
    s18 => "bench.spread.18",
    s19 => "bench.spread.19",
    s20 => "bench.spread.20",
    s21 => "bench.spread.21",
    s22 => "bench.spread.22",
    s23 => "bench.spread.23",
    s24 => "bench.spread.24",
    s25 => "bench.spread.25",
    s26 => "bench.spread.26",
    s27 => "bench.spread.27",
    s28 => "bench.spread.28",
    s29 => "bench.spread.29",
    s30 => "bench.spread.30",
    s31 => "bench.spread.31",
    s32 => "bench.spread.32",
    s33 => "bench.spread.33",
    s34 => "bench.spread.34",
    s35 => "bench.spread.35",
    s36 => "bench.spread.36",
    s37 => "bench.spread.37",
    s38 => "bench.spread.38",
    s39 => "bench.spread.39",
    s40 => "bench.spread.40",
    s41 => "bench.spread.41",
    s42 => "bench.spread.42",
    s43 => "bench.spread.43",
    s44 => "bench.spread.44",
    s45 => "bench.spread.45",
    s46 => "bench.spread.46",
    s47 => "bench.spread.47",
    s48 => "bench.spread.48",
    s49 => "bench.spread.49",
    s50 => "bench.spread.50",
    s51 => "bench.spread.51",
    s52 => "bench.spread.52",
    s53 => "bench.spread.53",
    s54 => "bench.spread.54",
    s55 => "bench.spread.55",
    s56 => "bench.spread.56",
    s57 => "bench.spread.57",
    s58 => "bench.spread.58",
    s59 => "bench.spread.59",
    s60 => "bench.spread.60",
    s61 => "bench.spread.61",
    s62 => "bench.spread.62",
    s63 => "bench.spread.63",
    s64 => "bench.spread.64",
    s65 => "bench.spread.65",
    s66 => "bench.spread.66",
    s67 => "bench.spread.67",
    s68 => "bench.spread.68",
    s69 => "bench.spread.69",
    s70 => "bench.spread.70",
    s71 => "bench.spread.71",
    s72 => "bench.spread.72",
    s73 => "bench.spread.73",
    s74 => "bench.spread.74",
    s75 => "bench.spread.75",
    s76 => "bench.spread.76",
    s77 => "bench.spread.77",
    s78 => "bench.spread.78",
    s79 => "bench.spread.79",
    s80 => "bench.spread.80",
    s81 => "bench.spread.81",
    s82 => "bench.spread.82",
    s83 => "bench.spread.83",
    s84 => "bench.spread.84",
    s85 => "bench.spread.85",
    s86 => "bench.spread.86",
    s87 => "bench.spread.87",
    s88 => "bench.spread.88",
    s89 => "bench.spread.89",
    s90 => "bench.spread.90",
    s91 => "bench.spread.91",
    s92 => "bench.spread.92",
    s93 => "bench.spread.93",
    s94 => "bench.spread.94",
    s95 => "bench.spread.95",
    s96 => "bench.spread.96",
    s97 => "bench.spread.97",
    s98 => "bench.spread.98",
    s99 => "bench.spread.99",
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_names_are_those_of_the_registered_tasks() {
        let names = super::names();
        assert_eq!(names.len(), super::COUNT);
        assert_eq!(names[0], "bench.spread.00");
        assert_eq!(names[99], "bench.spread.99");
    }
}

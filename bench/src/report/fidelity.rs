//! The modes: what each measured mode has of its product and what it lacks.
use super::table;
use crate::results::Results;

pub(super) fn section(r: &Results) -> String {
    let mut t = String::from("\n## The modes\n\n");
    table::header(&mut t, "mode", ["has", "lacks"]);
    for mode in r.modes() {
        let (has, lacks) = mode.fidelity();
        table::row(&mut t, mode.name(), [has, lacks]);
    }
    t
}

//! The ITIL priority matrix: priority derived from impact and urgency, for every ticket type.

use crate::enums::string_enum;

string_enum!(
    /// How widely the ticket affects the business.
    Impact { High => "high", Medium => "medium", Low => "low" }
);
string_enum!(
    /// How soon the business needs a resolution.
    Urgency { High => "high", Medium => "medium", Low => "low" }
);
string_enum!(
    /// Derived from impact and urgency; never set directly.
    Priority { P1 => "p1", P2 => "p2", P3 => "p3", P4 => "p4", P5 => "p5" }
);

impl Priority {
    /// The ITIL impact x urgency matrix.
    pub fn from_matrix(impact: Impact, urgency: Urgency) -> Priority {
        use Impact as I;
        use Urgency as U;
        match (impact, urgency) {
            (I::High, U::High) => Priority::P1,
            (I::High, U::Medium) | (I::Medium, U::High) => Priority::P2,
            (I::High, U::Low) | (I::Medium, U::Medium) | (I::Low, U::High) => Priority::P3,
            (I::Medium, U::Low) | (I::Low, U::Medium) => Priority::P4,
            (I::Low, U::Low) => Priority::P5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_matrix_covers_all_nine_cells() {
        use Impact as I;
        use Priority as P;
        use Urgency as U;
        let expected = [
            (I::High, U::High, P::P1),
            (I::High, U::Medium, P::P2),
            (I::High, U::Low, P::P3),
            (I::Medium, U::High, P::P2),
            (I::Medium, U::Medium, P::P3),
            (I::Medium, U::Low, P::P4),
            (I::Low, U::High, P::P3),
            (I::Low, U::Medium, P::P4),
            (I::Low, U::Low, P::P5),
        ];
        for (impact, urgency, priority) in expected {
            assert_eq!(
                Priority::from_matrix(impact, urgency),
                priority,
                "{impact} x {urgency}"
            );
        }
    }
}

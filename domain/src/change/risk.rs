//! Change risk: a pure function over the requester's answers and what the CMDB and the
//! change history say, returning the score, the level and what each answer contributed, so
//! that a requester sees why.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cmdb::item::Criticality;
use crate::enums::string_enum;

string_enum!(
    RiskLevel {
        Low => "low",
        Medium => "medium",
        High => "high",
        VeryHigh => "very_high",
    }
);

/// The questionnaire a requester answers on create and PATCH. An unanswered question counts
/// as its riskier answer: a change is not cheaper for saying less.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskAnswers {
    /// The change needs an outage of the items or services it touches.
    pub outage_required: Option<bool>,
    /// The change was tested outside production.
    pub tested: Option<bool>,
    /// The backout plan was tested.
    pub backout_tested: Option<bool>,
    /// The same change was done successfully before.
    pub done_before: Option<bool>,
    /// The change is implemented inside business hours.
    pub inside_business_hours: Option<bool>,
}

/// What the risk function learns from the CMDB and from past changes rather than from the
/// requester.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskFacts {
    /// The configuration items the change touches.
    pub item_count: usize,
    /// The highest criticality among them.
    pub item_criticality: Option<Criticality>,
    /// The business services that depend on them (or that the change names).
    pub service_count: usize,
    /// The highest criticality among those services.
    pub service_criticality: Option<Criticality>,
    /// The change has a backout plan.
    pub backout_plan: bool,
    /// Changes on the same items that failed or were backed out recently.
    pub recent_failed_changes: usize,
}

/// What one answer or fact added to the score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RiskContribution {
    #[schema(example = "tested")]
    pub factor: String,
    /// The answer or the fact, as text (`yes`, `no`, `unanswered`, `3 items`, `critical`).
    #[schema(example = "no")]
    pub answer: String,
    pub points: u32,
}

/// The computed risk: read only in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RiskAssessment {
    pub score: u32,
    pub level: RiskLevel,
    pub contributions: Vec<RiskContribution>,
}

/// Scores from this value up are `medium`, `high`, `very_high`.
pub const MEDIUM_FROM: u32 = 6;
pub const HIGH_FROM: u32 = 12;
pub const VERY_HIGH_FROM: u32 = 18;

impl RiskLevel {
    pub fn of_score(score: u32) -> RiskLevel {
        match score {
            s if s >= VERY_HIGH_FROM => RiskLevel::VeryHigh,
            s if s >= HIGH_FROM => RiskLevel::High,
            s if s >= MEDIUM_FROM => RiskLevel::Medium,
            _ => RiskLevel::Low,
        }
    }
}

fn criticality_points(criticality: Option<Criticality>) -> (String, u32) {
    match criticality {
        Some(c) => (
            c.as_str().to_owned(),
            match c {
                Criticality::Critical => 4,
                Criticality::High => 3,
                Criticality::Medium => 1,
                Criticality::Low => 0,
            },
        ),
        None => ("none".to_owned(), 0),
    }
}

/// A yes/no question: `risky` is the answer that adds `points`; unanswered adds them too.
fn question(answer: Option<bool>, risky: bool, points: u32) -> (String, u32) {
    match answer {
        None => ("unanswered".to_owned(), points),
        Some(value) => (
            if value { "yes" } else { "no" }.to_owned(),
            if value == risky { points } else { 0 },
        ),
    }
}

fn count(n: usize, noun: &str, steps: [(usize, u32); 3]) -> (String, u32) {
    let points = steps
        .iter()
        .rev()
        .find(|(from, _)| n >= *from)
        .map_or(0, |(_, points)| *points);
    (format!("{n} {noun}"), points)
}

/// The risk of a change from its answers and facts.
pub fn assess(answers: &RiskAnswers, facts: &RiskFacts) -> RiskAssessment {
    let items = count(facts.item_count, "items", [(1, 1), (2, 2), (6, 4)]);
    let services = count(
        facts.service_count,
        "business services",
        [(1, 2), (2, 3), (4, 4)],
    );
    let failed = count(
        facts.recent_failed_changes,
        "failed changes",
        [(1, 2), (2, 3), (3, 4)],
    );
    let backout_plan = if facts.backout_plan {
        ("yes".to_owned(), 0)
    } else {
        ("no".to_owned(), 2)
    };
    let parts: [(&str, (String, u32)); 11] = [
        ("affected_items", items),
        (
            "item_criticality",
            criticality_points(facts.item_criticality),
        ),
        ("dependent_services", services),
        (
            "service_criticality",
            criticality_points(facts.service_criticality),
        ),
        (
            "outage_required",
            question(answers.outage_required, true, 3),
        ),
        ("tested", question(answers.tested, false, 3)),
        ("backout_plan", backout_plan),
        ("backout_tested", question(answers.backout_tested, false, 2)),
        ("done_before", question(answers.done_before, false, 2)),
        (
            "inside_business_hours",
            question(answers.inside_business_hours, true, 2),
        ),
        ("recent_failed_changes", failed),
    ];
    let contributions: Vec<RiskContribution> = parts
        .into_iter()
        .map(|(factor, (answer, points))| RiskContribution {
            factor: factor.to_owned(),
            answer,
            points,
        })
        .collect();
    let score = contributions.iter().map(|c| c.points).sum();
    RiskAssessment {
        score,
        level: RiskLevel::of_score(score),
        contributions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> RiskAnswers {
        RiskAnswers {
            outage_required: Some(false),
            tested: Some(true),
            backout_tested: Some(true),
            done_before: Some(true),
            inside_business_hours: Some(false),
        }
    }

    #[test]
    fn a_tested_repeatable_change_on_nothing_critical_is_low() {
        let facts = RiskFacts {
            item_count: 1,
            item_criticality: Some(Criticality::Low),
            backout_plan: true,
            ..RiskFacts::default()
        };
        let assessment = assess(&safe(), &facts);
        assert_eq!(assessment.score, 1);
        assert_eq!(assessment.level, RiskLevel::Low);
        assert_eq!(assessment.contributions.len(), 11);
    }

    #[test]
    fn each_answer_says_what_it_added() {
        let answers = RiskAnswers {
            tested: Some(false),
            ..safe()
        };
        let assessment = assess(
            &answers,
            &RiskFacts {
                backout_plan: true,
                ..RiskFacts::default()
            },
        );
        let tested = assessment
            .contributions
            .iter()
            .find(|c| c.factor == "tested")
            .unwrap();
        assert_eq!((tested.answer.as_str(), tested.points), ("no", 3));
        assert_eq!(
            assessment.score,
            assessment
                .contributions
                .iter()
                .map(|c| c.points)
                .sum::<u32>()
        );
    }

    #[test]
    fn unanswered_questions_count_as_the_riskier_answer() {
        let answered = assess(&safe(), &RiskFacts::default());
        let unanswered = assess(&RiskAnswers::default(), &RiskFacts::default());
        assert_eq!(answered.score + 12, unanswered.score);
        assert!(unanswered
            .contributions
            .iter()
            .any(|c| c.answer == "unanswered"));
    }

    #[test]
    fn a_critical_database_under_critical_services_is_very_high() {
        let facts = RiskFacts {
            item_count: 1,
            item_criticality: Some(Criticality::Critical),
            service_count: 2,
            service_criticality: Some(Criticality::Critical),
            backout_plan: true,
            recent_failed_changes: 1,
        };
        let risky = RiskAnswers {
            outage_required: Some(true),
            inside_business_hours: Some(true),
            ..safe()
        };
        // 1 + 4 + 3 + 4 + 3 + 2 + 2 = 19
        let assessment = assess(&risky, &facts);
        assert_eq!(assessment.score, 19);
        assert_eq!(assessment.level, RiskLevel::VeryHigh);
        assert_eq!(assess(&safe(), &facts).level, RiskLevel::High);
    }

    #[test]
    fn levels_follow_the_thresholds() {
        assert_eq!(RiskLevel::of_score(0), RiskLevel::Low);
        assert_eq!(RiskLevel::of_score(MEDIUM_FROM - 1), RiskLevel::Low);
        assert_eq!(RiskLevel::of_score(MEDIUM_FROM), RiskLevel::Medium);
        assert_eq!(RiskLevel::of_score(HIGH_FROM), RiskLevel::High);
        assert_eq!(RiskLevel::of_score(VERY_HIGH_FROM), RiskLevel::VeryHigh);
        assert!(RiskLevel::Low < RiskLevel::VeryHigh);
    }
}

//! Routing of new incidents to an assignment group by category, through ordered rules.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// "Incidents of this category (and subcategory) go to this group." Lower positions win.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AssignmentRule {
    pub id: String,
    pub position: i32,
    pub category: String,
    /// `null` matches every subcategory of the category.
    pub subcategory: Option<String>,
    pub assignment_group: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl AssignmentRule {
    /// Categories are free text typed by people: compare them case-insensitively.
    pub fn matches(&self, category: &str, subcategory: Option<&str>) -> bool {
        self.category.eq_ignore_ascii_case(category)
            && match (&self.subcategory, subcategory) {
                (None, _) => true,
                (Some(rule), Some(given)) => rule.eq_ignore_ascii_case(given),
                (Some(_), None) => false,
            }
    }
}

/// The group of the first rule, by position, that matches.
pub fn route<'a>(
    rules: &'a [AssignmentRule],
    category: &str,
    subcategory: Option<&str>,
) -> Option<&'a str> {
    let mut ordered: Vec<&AssignmentRule> = rules.iter().collect();
    ordered.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
    ordered
        .into_iter()
        .find(|rule| rule.matches(category, subcategory))
        .map(|rule| rule.assignment_group.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        position: i32,
        category: &str,
        subcategory: Option<&str>,
        group: &str,
    ) -> AssignmentRule {
        AssignmentRule {
            id: format!("r{position}"),
            position,
            category: category.into(),
            subcategory: subcategory.map(Into::into),
            assignment_group: group.into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
        }
    }

    #[test]
    fn the_first_matching_rule_by_position_wins() {
        let rules = vec![
            rule(20, "network", None, "net"),
            rule(10, "network", Some("vpn"), "vpn-team"),
            rule(30, "hardware", None, "desk"),
        ];
        assert_eq!(route(&rules, "Network", Some("VPN")), Some("vpn-team"));
        assert_eq!(route(&rules, "network", Some("wifi")), Some("net"));
        assert_eq!(route(&rules, "network", None), Some("net"));
        assert_eq!(route(&rules, "software", None), None);
    }
}

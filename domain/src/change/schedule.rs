//! When changes may happen: planned windows, freeze windows and the conflicts between changes,
//! as pure functions over what the CMDB walk found. Every hit and every conflict is listed,
//! never the first only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ChangeState, ChangeType};
use crate::cmdb::impact::Walked;
use crate::{DomainError, FieldError};

/// A planned (or frozen) period, start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// A window from optional bounds: both or none; the end after the start.
    pub fn of(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        start_field: &str,
        end_field: &str,
    ) -> Result<Option<Window>, DomainError> {
        match (start, end) {
            (None, None) => Ok(None),
            (Some(start), Some(end)) if end > start => Ok(Some(Window { start, end })),
            (Some(_), Some(_)) => Err(DomainError::invalid(
                end_field,
                format!("must be after {start_field}"),
            )),
            (Some(_), None) => Err(DomainError::invalid(
                end_field,
                format!("is required with {start_field}"),
            )),
            (None, Some(_)) => Err(DomainError::invalid(
                start_field,
                format!("is required with {end_field}"),
            )),
        }
    }

    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// What a freeze window covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeScope {
    /// Every item: nothing changes.
    #[serde(default)]
    pub everything: bool,
    /// Item ids frozen, with every item they depend on.
    #[serde(default)]
    pub configuration_items: Vec<String>,
    /// Business service ids frozen, with every item they depend on.
    #[serde(default)]
    pub services: Vec<String>,
}

impl FreezeScope {
    pub fn validate(&self) -> Result<(), DomainError> {
        let listed = self.configuration_items.len() + self.services.len();
        if self.everything && listed > 0 {
            return Err(DomainError::invalid(
                "scope",
                "is everything, or lists items and services, not both",
            ));
        }
        if !self.everything && listed == 0 {
            return Err(DomainError::invalid(
                "scope",
                "must be everything or list configuration_items or services",
            ));
        }
        if listed > 200 {
            return Err(DomainError::invalid(
                "scope",
                "lists at most 200 items and services",
            ));
        }
        Ok(())
    }

    /// The items and services the scope names.
    pub fn roots(&self) -> impl Iterator<Item = &String> {
        self.configuration_items.iter().chain(&self.services)
    }
}

/// A period in which changes are frozen.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FreezeWindow {
    pub id: String,
    pub name: String,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub scope: FreezeScope,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl FreezeWindow {
    pub fn window(&self) -> Window {
        Window {
            start: self.start,
            end: self.end,
        }
    }
}

/// One of the change's items inside a freeze, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FrozenItem {
    /// The change's item.
    pub configuration_item: String,
    /// The frozen item or service that covers it (itself when listed; absent for `everything`).
    pub frozen_by: Option<String>,
    /// From the frozen item or service down to the change's item over `depends on`
    /// relationships (one item when listed itself).
    pub path: Vec<String>,
}

/// A freeze window the change's planned window hits, with every item concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FreezeHit {
    pub freeze_window_id: String,
    pub name: String,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub items: Vec<FrozenItem>,
}

/// The walk of the CMDB from each of a change's items, one way: up, the items that depend on
/// it; down, those it depends on. `walks[item].path_to(reached)` is one shortest path.
pub type Dependants = BTreeMap<String, Walked>;

/// Every freeze window that `window` overlaps and that touches one of `items` (or the
/// change's `service`), with every item concerned. A frozen item or service covers every item
/// it depends on, so an item is frozen when it, or an item depending on it, is listed.
pub fn freeze_hits(
    window: &Window,
    items: &[String],
    service: Option<&str>,
    freezes: &[FreezeWindow],
    dependants: &Dependants,
) -> Vec<FreezeHit> {
    let mut hits = Vec::new();
    for freeze in freezes.iter().filter(|f| f.window().overlaps(window)) {
        let mut concerned = Vec::new();
        if freeze.scope.everything {
            concerned.extend(items.iter().map(|item| FrozenItem {
                configuration_item: item.clone(),
                frozen_by: None,
                path: vec![item.clone()],
            }));
        } else {
            for item in items {
                for root in freeze.scope.roots() {
                    let path = if root == item {
                        Some(vec![item.clone()])
                    } else {
                        dependants
                            .get(item)
                            .and_then(|up| up.path_to(root))
                            .map(|path| path.into_iter().rev().collect())
                    };
                    if let Some(path) = path {
                        concerned.push(FrozenItem {
                            configuration_item: item.clone(),
                            frozen_by: Some(root.clone()),
                            path,
                        });
                    }
                }
            }
            if let Some(service) = service.filter(|s| freeze.scope.services.iter().any(|f| f == s))
            {
                if !concerned.iter().any(|c| c.configuration_item == service) {
                    concerned.push(FrozenItem {
                        configuration_item: service.to_owned(),
                        frozen_by: Some(service.to_owned()),
                        path: vec![service.to_owned()],
                    });
                }
            }
        }
        if freeze.scope.everything || !concerned.is_empty() {
            hits.push(FreezeHit {
                freeze_window_id: freeze.id.clone(),
                name: freeze.name.clone(),
                reason: freeze.reason.clone(),
                start: freeze.start,
                end: freeze.end,
                items: concerned,
            });
        }
    }
    hits
}

/// Whether a change of this type may enter a freeze, and on what condition.
pub fn check_freeze(
    change_type: ChangeType,
    hits: &[FreezeHit],
    override_reason: Option<&str>,
) -> Result<FreezeOutcome, FreezeRefusal> {
    if hits.is_empty() {
        return Ok(FreezeOutcome::Clear);
    }
    match (change_type, override_reason.map(str::trim)) {
        (ChangeType::Emergency, Some(reason)) if !reason.is_empty() => {
            Ok(FreezeOutcome::Overridden(reason.to_owned()))
        }
        (ChangeType::Emergency, _) => Err(FreezeRefusal {
            detail: "the planned window hits a freeze: an emergency change may enter it with \
                     override_reason"
                .to_owned(),
        }),
        _ => Err(FreezeRefusal {
            detail: format!(
                "the planned window hits {} freeze window(s): {}",
                hits.len(),
                hits.iter()
                    .map(|h| {
                        let items: Vec<&str> = h
                            .items
                            .iter()
                            .map(|i| i.configuration_item.as_str())
                            .collect();
                        if items.is_empty() {
                            h.name.clone()
                        } else {
                            format!("{} ({})", h.name, items.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeOutcome {
    Clear,
    /// An emergency change entered a freeze, for this reason.
    Overridden(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeRefusal {
    pub detail: String,
}

/// How another change's item relates to one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Both changes touch this item.
    SameItem,
    /// The other change's item depends on ours.
    DependsOnOurs,
    /// Our item depends on the other change's item.
    OursDependsOnIt,
}

/// Where the CMDB walks from our items reached: for an item, how and by which path (from our
/// item to it). Paths are spelled out only for the items asked about.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    ours: &'a [String],
    up: &'a Dependants,
    down: &'a Dependants,
}

impl<'a> Reach<'a> {
    /// Our own items, and the walks up (dependants) and down (what ours depend on).
    pub fn new(ours: &'a [String], up: &'a Dependants, down: &'a Dependants) -> Reach<'a> {
        Reach { ours, up, down }
    }

    /// How `item` is linked to ours: the same item first, then the shortest walk (the first
    /// of equal ones, up before down).
    pub fn find(&self, item: &str) -> Option<(Link, Vec<String>)> {
        if self.ours.iter().any(|own| own == item) {
            return Some((Link::SameItem, vec![item.to_owned()]));
        }
        let mut best: Option<(Link, &Walked, u32)> = None;
        for (link, walks) in [
            (Link::DependsOnOurs, self.up),
            (Link::OursDependsOnIt, self.down),
        ] {
            for walked in walks.values() {
                if let Some(distance) = walked.distance(item) {
                    if best.is_none_or(|(.., shortest)| distance < shortest) {
                        best = Some((link, walked, distance));
                    }
                }
            }
        }
        let (link, walked, _) = best?;
        Some((link, walked.path_to(item)?))
    }
}

/// Another change planned over a window, with its items.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    pub id: String,
    pub number: String,
    pub title: String,
    pub state: ChangeState,
    pub window: Window,
    pub items: Vec<String>,
}

/// How one item of the other change is linked to ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConflictLink {
    /// The other change's item.
    pub configuration_item: String,
    pub link: Link,
    /// From our item to theirs over CMDB relationships (one item when both touch it).
    pub path: Vec<String>,
}

/// Another scheduled or implementing change whose window overlaps ours on linked items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Conflict {
    pub change_id: String,
    #[schema(example = "CHG0000042")]
    pub number: String,
    pub title: String,
    pub state: ChangeState,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub links: Vec<ConflictLink>,
}

/// Every other scheduled or implementing change whose window overlaps `window` and that
/// touches an item `reach` reached, with every linked item and its path.
pub fn conflicts(
    own_id: &str,
    window: &Window,
    reach: &Reach<'_>,
    others: &[PlannedChange],
) -> Vec<Conflict> {
    let mut found = Vec::new();
    for other in others {
        if other.id == own_id
            || !matches!(other.state, ChangeState::Scheduled | ChangeState::Implement)
            || !other.window.overlaps(window)
        {
            continue;
        }
        let links: Vec<ConflictLink> = other
            .items
            .iter()
            .filter_map(|item| {
                reach.find(item).map(|(link, path)| ConflictLink {
                    configuration_item: item.clone(),
                    link,
                    path,
                })
            })
            .collect();
        if !links.is_empty() {
            found.push(Conflict {
                change_id: other.id.clone(),
                number: other.number.clone(),
                title: other.title.clone(),
                state: other.state,
                planned_start: other.window.start,
                planned_end: other.window.end,
                links,
            });
        }
    }
    found.sort_by(|a, b| (a.planned_start, &a.number).cmp(&(b.planned_start, &b.number)));
    found
}

/// Validates that `items` and `risk` stay inside a standard change template: 422 naming each
/// item outside it and a risk above its cap.
pub fn check_template_bounds(
    allowed_items: &[String],
    risk_cap: super::RiskLevel,
    items: &[String],
    risk: super::RiskLevel,
) -> Result<(), DomainError> {
    let mut errors: Vec<FieldError> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| !allowed_items.contains(item))
        .map(|(n, item)| {
            FieldError::new(
                format!("configuration_items[{n}]"),
                format!("{item} is outside the template's items"),
            )
        })
        .collect();
    if risk > risk_cap {
        errors.push(FieldError::new(
            "risk",
            format!("{risk} is above the template's risk cap {risk_cap}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0).unwrap()
    }

    fn window(from: u32, to: u32) -> Window {
        Window {
            start: at(from),
            end: at(to),
        }
    }

    fn freeze(id: &str, from: u32, to: u32, scope: FreezeScope) -> FreezeWindow {
        FreezeWindow {
            id: id.into(),
            name: format!("freeze {id}"),
            reason: "quarter end".into(),
            start: at(from),
            end: at(to),
            scope,
            created_at: at(0),
            updated_at: at(0),
            version: 1,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn windows_need_both_bounds_in_order_and_touching_ends_do_not_overlap() {
        assert!(Window::of(Some(at(3)), Some(at(2)), "planned_start", "planned_end").is_err());
        assert!(Window::of(Some(at(3)), None, "planned_start", "planned_end").is_err());
        assert_eq!(Window::of(None, None, "a", "b"), Ok(None));
        assert!(!window(1, 2).overlaps(&window(2, 3)));
        assert!(window(1, 3).overlaps(&window(2, 4)));
    }

    #[test]
    fn every_freeze_hit_names_every_item_and_a_service_covers_what_it_depends_on() {
        // app depends on db; the shop service depends on app.
        let mut dependants = Dependants::new();
        dependants.insert(
            "db".into(),
            Walked::from_steps("db", &[("app", "db"), ("shop", "app")]),
        );
        let freezes = vec![
            freeze(
                "f1",
                0,
                6,
                FreezeScope {
                    services: ids(&["shop"]),
                    ..Default::default()
                },
            ),
            freeze(
                "f2",
                2,
                4,
                FreezeScope {
                    everything: true,
                    ..Default::default()
                },
            ),
            freeze(
                "f3",
                8,
                9,
                FreezeScope {
                    everything: true,
                    ..Default::default()
                },
            ),
            freeze(
                "f4",
                0,
                6,
                FreezeScope {
                    configuration_items: ids(&["other"]),
                    ..Default::default()
                },
            ),
        ];
        let hits = freeze_hits(
            &window(3, 5),
            &ids(&["db", "web"]),
            None,
            &freezes,
            &dependants,
        );
        let names: Vec<&str> = hits.iter().map(|h| h.freeze_window_id.as_str()).collect();
        assert_eq!(names, ["f1", "f2"]);
        assert_eq!(hits[0].items.len(), 1);
        assert_eq!(hits[0].items[0].path, ids(&["shop", "app", "db"]));
        assert_eq!(hits[1].items.len(), 2);
        let refusal = check_freeze(ChangeType::Normal, &hits, Some("urgent")).unwrap_err();
        assert!(
            refusal.detail.contains("freeze f1 (db)"),
            "{}",
            refusal.detail
        );
        assert!(
            refusal.detail.contains("freeze f2 (db, web)"),
            "{}",
            refusal.detail
        );
        assert!(check_freeze(ChangeType::Emergency, &hits, None).is_err());
        assert_eq!(
            check_freeze(ChangeType::Emergency, &hits, Some("outage")),
            Ok(FreezeOutcome::Overridden("outage".into()))
        );
        assert_eq!(
            check_freeze(ChangeType::Normal, &[], None),
            Ok(FreezeOutcome::Clear)
        );
    }

    #[test]
    fn conflicts_list_every_overlapping_linked_change_with_its_path() {
        let up = BTreeMap::from([("db".to_string(), Walked::from_steps("db", &[("app", "db")]))]);
        let down = BTreeMap::from([(
            "db".to_string(),
            Walked::from_steps("db", &[("disk", "db")]),
        )]);
        let ours = ids(&["db"]);
        let reach = Reach::new(&ours, &up, &down);
        let planned = |id: &str, from, to, state, items: &[&str]| PlannedChange {
            id: id.into(),
            number: format!("CHG{id}"),
            title: id.into(),
            state,
            window: window(from, to),
            items: ids(items),
        };
        let others = vec![
            planned("a", 1, 3, ChangeState::Scheduled, &["app", "db"]),
            planned("b", 2, 4, ChangeState::Implement, &["disk"]),
            planned("c", 6, 7, ChangeState::Scheduled, &["db"]),
            planned("d", 2, 4, ChangeState::Scheduled, &["unrelated"]),
            planned("e", 2, 4, ChangeState::New, &["db"]),
            planned("self", 2, 4, ChangeState::Scheduled, &["db"]),
        ];
        let found = conflicts("self", &window(2, 5), &reach, &others);
        let numbers: Vec<&str> = found.iter().map(|c| c.number.as_str()).collect();
        assert_eq!(numbers, ["CHGa", "CHGb"]);
        assert_eq!(found[0].links.len(), 2);
        assert_eq!(found[0].links[0].link, Link::DependsOnOurs);
        assert_eq!(found[0].links[0].path, ids(&["db", "app"]));
        assert_eq!(found[0].links[1].link, Link::SameItem);
        assert_eq!(found[1].links[0].link, Link::OursDependsOnIt);
    }

    #[test]
    fn a_template_names_each_item_outside_it_and_a_risk_above_its_cap() {
        use super::super::RiskLevel;
        assert!(check_template_bounds(
            &ids(&["a"]),
            RiskLevel::Medium,
            &ids(&["a"]),
            RiskLevel::Low
        )
        .is_ok());
        let Err(DomainError::Invalid(errors)) = check_template_bounds(
            &ids(&["a"]),
            RiskLevel::Low,
            &ids(&["a", "b", "c"]),
            RiskLevel::High,
        ) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["configuration_items[1]", "configuration_items[2]", "risk"]
        );
    }
}

//! Change approvals: policies (data) choose approvers from a change's type and risk; each
//! approver decides once; any rejection rejects; the quorum authorises.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::risk::RiskLevel;
use super::ChangeType;
use crate::enums::string_enum;
use crate::{DomainError, FieldError, Role};

string_enum!(
    /// `withdrawn`: the round ended (authorised, rejected or canceled) before this approver
    /// decided.
    ApprovalState {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Withdrawn => "withdrawn",
    }
);

string_enum!(
    Decision {
        Approve => "approve",
        Reject => "reject",
    }
);

/// The most approvals a policy can require (far above any approver list it can name).
pub const MAX_QUORUM: u32 = 1000;

/// Who a policy asks: a named user, every member of a group, or every user with a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// A user id.
    User(String),
    /// A group id: each active member is asked.
    Group(String),
    /// A role: each active user holding it is asked.
    Role(Role),
}

/// An approval policy: which changes it covers and whom it asks. The first policy by
/// precedence that covers a change decides.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApprovalPolicy {
    pub id: String,
    pub name: String,
    /// Lower first.
    pub precedence: i32,
    /// The change types covered; empty covers every type.
    pub change_types: Vec<ChangeType>,
    /// The risk levels covered; empty covers every level.
    pub risks: Vec<RiskLevel>,
    pub approvers: Vec<Approver>,
    /// Approvals needed to authorise.
    pub quorum: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// The definition of a policy as clients write it (and as it is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRules {
    pub change_types: Vec<ChangeType>,
    pub risks: Vec<RiskLevel>,
    pub approvers: Vec<Approver>,
    pub quorum: u32,
}

impl PolicyRules {
    pub fn validate(&self) -> Result<(), DomainError> {
        let mut errors = Vec::new();
        if self.approvers.is_empty() {
            errors.push(FieldError::new(
                "approvers",
                "must name at least one approver",
            ));
        }
        if self.approvers.len() > 50 {
            errors.push(FieldError::new(
                "approvers",
                "must name at most 50 approvers",
            ));
        }
        if !(1..=MAX_QUORUM).contains(&self.quorum) {
            errors.push(FieldError::new(
                "quorum",
                format!("must be 1 to {MAX_QUORUM}"),
            ));
        }
        if self.change_types.contains(&ChangeType::Standard) {
            errors.push(FieldError::new(
                "change_types",
                "standard changes are pre-approved by their template and need no approvers",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(errors))
        }
    }

    pub fn covers(&self, change_type: ChangeType, risk: RiskLevel) -> bool {
        (self.change_types.is_empty() || self.change_types.contains(&change_type))
            && (self.risks.is_empty() || self.risks.contains(&risk))
    }
}

impl ApprovalPolicy {
    pub fn rules(&self) -> PolicyRules {
        PolicyRules {
            change_types: self.change_types.clone(),
            risks: self.risks.clone(),
            approvers: self.approvers.clone(),
            quorum: self.quorum,
        }
    }
}

/// The policy that decides for a change: the first by precedence (then name) covering it.
pub fn choose_policy(
    policies: &[ApprovalPolicy],
    change_type: ChangeType,
    risk: RiskLevel,
) -> Option<&ApprovalPolicy> {
    policies
        .iter()
        .filter(|p| p.rules().covers(change_type, risk))
        .min_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)))
}

/// One approver's part in one authorisation round of a change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChangeApproval {
    pub id: String,
    pub change_id: String,
    /// Each request for authorisation opens a new round.
    pub round: i64,
    /// The user id who decides.
    pub approver: String,
    /// Why they were asked: `group:<id>`, `role:<role>` or `user`.
    pub asked_as: String,
    pub state: ApprovalState,
    pub comment: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Where a round stands after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    Pending,
    Authorized,
    Rejected,
}

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionError {
    /// Someone else's approval (403).
    NotTheApprover,
    /// Decided already, or its round is over (409).
    AlreadyDecided(ApprovalState),
    /// A rejection needs a comment (422).
    CommentRequired,
}

/// Where the approvals of one round stand: any rejection rejects, `quorum` approvals
/// authorise, anything else waits.
pub fn round_outcome(approvals: &[ChangeApproval], quorum: u32) -> RoundOutcome {
    if approvals.iter().any(|a| a.state == ApprovalState::Rejected) {
        return RoundOutcome::Rejected;
    }
    let approved = approvals
        .iter()
        .filter(|a| a.state == ApprovalState::Approved)
        .count();
    if approved >= quorum as usize {
        RoundOutcome::Authorized
    } else {
        RoundOutcome::Pending
    }
}

/// Records `decider`'s decision on `approvals[index]` and says where the round stands; when
/// the round ends, the approvals still pending are withdrawn.
pub fn decide(
    approvals: &mut [ChangeApproval],
    index: usize,
    decider: &str,
    decision: Decision,
    comment: Option<String>,
    quorum: u32,
    now: DateTime<Utc>,
) -> Result<RoundOutcome, DecisionError> {
    let Some(approval) = approvals.get_mut(index) else {
        return Err(DecisionError::NotTheApprover);
    };
    if approval.approver != decider {
        return Err(DecisionError::NotTheApprover);
    }
    if approval.state != ApprovalState::Pending {
        return Err(DecisionError::AlreadyDecided(approval.state));
    }
    let comment = comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if decision == Decision::Reject && comment.is_none() {
        return Err(DecisionError::CommentRequired);
    }
    approval.state = match decision {
        Decision::Approve => ApprovalState::Approved,
        Decision::Reject => ApprovalState::Rejected,
    };
    approval.comment = comment;
    approval.decided_at = Some(now);
    let outcome = round_outcome(approvals, quorum);
    if outcome != RoundOutcome::Pending {
        withdraw_pending(approvals);
    }
    Ok(outcome)
}

/// Ends a round: whoever has not decided no longer needs to.
pub fn withdraw_pending(approvals: &mut [ChangeApproval]) {
    for approval in approvals {
        if approval.state == ApprovalState::Pending {
            approval.state = ApprovalState::Withdrawn;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        name: &str,
        precedence: i32,
        types: &[ChangeType],
        risks: &[RiskLevel],
    ) -> ApprovalPolicy {
        ApprovalPolicy {
            id: name.into(),
            name: name.into(),
            precedence,
            change_types: types.to_vec(),
            risks: risks.to_vec(),
            approvers: vec![Approver::Role(Role::ChangeManager)],
            quorum: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
        }
    }

    fn round(approvers: &[&str]) -> Vec<ChangeApproval> {
        approvers
            .iter()
            .enumerate()
            .map(|(n, who)| ChangeApproval {
                id: format!("a{n}"),
                change_id: "c1".into(),
                round: 1,
                approver: (*who).into(),
                asked_as: "group:cab".into(),
                state: ApprovalState::Pending,
                comment: None,
                decided_at: None,
                created_at: Utc::now(),
            })
            .collect()
    }

    #[test]
    fn the_first_covering_policy_by_precedence_decides() {
        let policies = vec![
            policy(
                "cab",
                10,
                &[ChangeType::Normal],
                &[RiskLevel::High, RiskLevel::VeryHigh],
            ),
            policy("emergency", 5, &[ChangeType::Emergency], &[]),
            policy("manager", 20, &[], &[]),
        ];
        let pick = |t, r| choose_policy(&policies, t, r).map(|p| p.name.as_str());
        assert_eq!(pick(ChangeType::Normal, RiskLevel::High), Some("cab"));
        assert_eq!(pick(ChangeType::Normal, RiskLevel::Low), Some("manager"));
        assert_eq!(
            pick(ChangeType::Emergency, RiskLevel::VeryHigh),
            Some("emergency")
        );
        assert_eq!(
            choose_policy(&policies[..1], ChangeType::Normal, RiskLevel::Low),
            None
        );
    }

    #[test]
    fn the_quorum_authorises_and_withdraws_the_rest() {
        let mut approvals = round(&["ann", "bob", "cid"]);
        let now = Utc::now();
        assert_eq!(
            decide(&mut approvals, 0, "ann", Decision::Approve, None, 2, now),
            Ok(RoundOutcome::Pending)
        );
        assert_eq!(
            decide(
                &mut approvals,
                2,
                "cid",
                Decision::Approve,
                Some("ok".into()),
                2,
                now
            ),
            Ok(RoundOutcome::Authorized)
        );
        assert_eq!(approvals[1].state, ApprovalState::Withdrawn);
        assert_eq!(
            decide(&mut approvals, 1, "bob", Decision::Approve, None, 2, now),
            Err(DecisionError::AlreadyDecided(ApprovalState::Withdrawn))
        );
    }

    #[test]
    fn any_reject_rejects_and_needs_a_comment() {
        let mut approvals = round(&["ann", "bob"]);
        let now = Utc::now();
        decide(&mut approvals, 0, "ann", Decision::Approve, None, 2, now).unwrap();
        assert_eq!(
            decide(
                &mut approvals,
                1,
                "bob",
                Decision::Reject,
                Some("  ".into()),
                2,
                now
            ),
            Err(DecisionError::CommentRequired)
        );
        assert_eq!(approvals[1].state, ApprovalState::Pending);
        assert_eq!(
            decide(
                &mut approvals,
                1,
                "bob",
                Decision::Reject,
                Some("No backout".into()),
                2,
                now
            ),
            Ok(RoundOutcome::Rejected)
        );
        assert_eq!(approvals[1].comment.as_deref(), Some("No backout"));
    }

    #[test]
    fn only_the_named_approver_decides_and_only_once() {
        let mut approvals = round(&["ann", "bob"]);
        let now = Utc::now();
        assert_eq!(
            decide(&mut approvals, 0, "bob", Decision::Approve, None, 2, now),
            Err(DecisionError::NotTheApprover)
        );
        decide(&mut approvals, 0, "ann", Decision::Approve, None, 2, now).unwrap();
        assert_eq!(
            decide(
                &mut approvals,
                0,
                "ann",
                Decision::Reject,
                Some("changed my mind".into()),
                2,
                now
            ),
            Err(DecisionError::AlreadyDecided(ApprovalState::Approved))
        );
        assert_eq!(approvals[0].state, ApprovalState::Approved);
    }

    #[test]
    fn policies_need_approvers_and_a_quorum_and_never_cover_standard_changes() {
        let bad = PolicyRules {
            change_types: vec![ChangeType::Standard],
            risks: vec![],
            approvers: vec![],
            quorum: 0,
        };
        let Err(DomainError::Invalid(errors)) = bad.validate() else {
            panic!("accepted")
        };
        assert_eq!(errors.len(), 3);
    }
}

"""Deal rules as activities: they come from configuration files, so reading them is I/O,
and a run records what it was given in its history."""

from __future__ import annotations

from temporalio import activity

from activities._base import ActivityModel
from canonical import Account, DealPlan, DealPolicy, DealRules, Opportunity, plan_deal


class DealPolicyInput(ActivityModel):
    crm: str


class PlanDealInput(ActivityModel):
    opportunity: Opportunity
    account: Account


class DealActivities:
    def __init__(self, rules: DealRules) -> None:
        self.rules = rules

    @activity.defn
    async def deal_policy(self, request: DealPolicyInput) -> DealPolicy:
        return self.rules.policy()

    @activity.defn
    async def plan_deal(self, request: PlanDealInput) -> DealPlan:
        return plan_deal(request.opportunity, request.account, self.rules)

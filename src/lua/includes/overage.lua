-- How an amount above what was held is charged across every budgeted scope, for a commit
-- (overage = actual - estimate, base = estimate) and a direct debit (overage = actual, base = 0).
-- Returns plan, covered: plan[i] = {spent = added spent, debt = added debt, flag = set over-limit}
-- for ledgers[i], and the part of the overage that is charged; or nil, scope of a refusal.
--
-- ALLOW_IF_AVAILABLE charges as much as every scope can cover, never creates debt, and flags
-- the scopes that could not cover the whole overage. ALLOW_WITH_OVERDRAFT lets scopes without
-- a limit cap the overage the same way; scopes with a limit take the unfunded part of the
-- (capped) overage as debt, and refuse when their debt would pass the limit.
local function plan_overage(ledgers, policy, overage, base)
  local plan = {}
  local covered = overage
  if policy == 'ALLOW_WITH_OVERDRAFT' then
    for _, l in ipairs(ledgers) do
      if l.overdraft_limit == 0 and l.remaining < overage then
        local avail = math.max(l.remaining, 0)
        if avail < covered then covered = avail end
      end
    end
    for i, l in ipairs(ledgers) do
      if l.remaining >= covered or l.overdraft_limit == 0 then
        plan[i] = {spent = base + covered, debt = 0, flag = (l.overdraft_limit == 0 and l.remaining < overage)}
      else
        local funded = math.max(l.remaining, 0)
        local deficit = covered - funded
        if l.debt + deficit > l.overdraft_limit then return nil, l.scope end
        plan[i] = {spent = base + funded, debt = deficit, flag = false}
      end
    end
    return plan, covered
  end
  for _, l in ipairs(ledgers) do
    local avail = math.max(l.remaining, 0)
    if avail < covered then covered = avail end
  end
  for i, l in ipairs(ledgers) do
    plan[i] = {spent = base + covered, debt = 0, flag = (covered < overage and l.remaining < overage)}
  end
  return plan, covered
end

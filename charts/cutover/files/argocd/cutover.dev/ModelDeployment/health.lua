-- Argo CD health check for cutover.dev/ModelDeployment (docs/gitops.md shows where it goes).
-- Written for the base library alone: argocd-cm scripts get no string or math library.
--
--   Progressing  being deleted; status not written yet, or for an older generation; a
--                rollout under way or waiting to start; the stable revision short of pods
--   Suspended    a rollout paused by on-call or an AlertRule, waiting for a person to
--                promote it, or held (before or during) until its SafetyPolicy is ready
--   Degraded     Stalled=True: rolled back, no ready pod past progressDeadlineSeconds, an
--                AlertRule's fallback serving, a spec the operator rejects; also phases
--                Degraded, RolledBack and Failed written by an operator older than the
--                Stalled and Reconciling conditions
--   Healthy      the spec's revision serves with every pod ready
-- The message is status.message: it names the revisions, the canary step and weight, what
-- the rollout waits for, and what on-call can do.

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local hs = {}
local status = obj.status
local message = ""
if status ~= nil and status.message ~= nil then
  message = status.message
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "ModelDeployment is being deleted"
  return hs
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the cutover operator to observe the ModelDeployment"
  return hs
end

if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the cutover operator to observe generation " .. obj.metadata.generation
    .. " (last observed: " .. status.observedGeneration .. ")"
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end

-- Reconciling repeats the Progressing reason of a rollout that waits for a person or a policy.
local reconciling = condition(status, "Reconciling")
local moving = reconciling ~= nil and reconciling.status == "True"
local waits = moving and (reconciling.reason == "Paused" or reconciling.reason == "AwaitingPromotion"
  or reconciling.reason == "SafetyPolicyNotReady")
if waits or status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message
  return hs
end

if moving or status.phase == "Pending" or status.phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = message
  return hs
end

if status.phase == "Degraded" or status.phase == "RolledBack" or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end

hs.status = "Healthy"
hs.message = message
return hs

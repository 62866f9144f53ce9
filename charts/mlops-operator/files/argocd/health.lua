-- Argo CD health check shared by TrainingRun, ModelVersion and ModelDeployment (mlops.dev).
-- It reads only the conventions every mlops.dev status follows: observedGeneration, phase,
-- and the Ready / Progressing / Degraded conditions.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil then
  return hs
end
local st = obj.status
if st.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and st.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local ready, degraded = nil, nil
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Degraded" and c.status == "True" then degraded = c end
  end
end
local phase = st.phase or ""
local function msg(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.message end
  if c ~= nil and c.reason ~= nil then return c.reason end
  return fallback
end
if phase == "Failed" or phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = msg(ready, phase)
  return hs
end
if degraded ~= nil then
  hs.status = "Degraded"
  hs.message = msg(degraded, "Degraded")
  return hs
end
if phase == "AwaitingApproval" or phase == "Paused" then
  hs.status = "Suspended"
  hs.message = msg(ready, phase)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = msg(ready, phase)
  return hs
end
hs.message = msg(ready, phase ~= "" and phase or "Progressing")
return hs

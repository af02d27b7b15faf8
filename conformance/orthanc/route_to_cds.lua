-- Auto-route every modality a model reads to the CDS plugin: mammography (MG), slide microscopy (SM),
-- ultrasound (US) and the sonographer's structured report (SR), exactly once per instance, and never
-- route the plugin's own results (SEG, SR, assessment SR, encapsulated PDF) back to it.
--
-- Configuration (in orthanc.json, read with GetOrthancConfiguration):
--   "CdsRouting": {
--     "Modality":   "cds",            -- the DicomModalities entry of the plugin
--     "PluginAet":  "CDS",            -- instances whose RemoteAET is this came from the plugin
--     "Modalities": ["MG", "SM", "US", "SR"],  -- series modalities that are routed
--     "Synchronous": false            -- true: the Lua callback waits for the C-STORE
--   }
--   "UserMetadata": { "CdsRoutedAt": 1024 }   -- marks instances already sent (required)
--
-- WHY per-instance marks: OnStableStudy fires again every time the study changes - in particular
-- when the plugin's results arrive into the same study. Marking what was sent (metadata
-- CdsRoutedAt) makes routing idempotent: a study is sent once, a late extra view is sent once more,
-- and results (modality SEG/SR/DOC, RemoteAET = the plugin, or uploaded by STOW-RS through
-- /dicom-web with no RemoteAET) are never eligible.
--
-- Use RestApiPost('/modalities/<name>/store', ...) and not SendToModality(studyId, ...): the latter
-- treats the id as an instance id, logs "Unable to read attachment" and still reports success.

local function routingConfig()
  local cfg = GetOrthancConfiguration()['CdsRouting'] or {}
  local modalities = {}
  for _, m in ipairs(cfg['Modalities'] or { 'MG', 'SM', 'US', 'SR' }) do
    modalities[string.upper(m)] = true
  end
  return {
    modality = cfg['Modality'] or 'cds',
    pluginAet = string.upper(cfg['PluginAet'] or 'CDS'),
    modalities = modalities,
    synchronous = cfg['Synchronous'] == true,
  }
end

local function trim(s)
  return (string.gsub(s or '', '^%s*(.-)%s*$', '%1'))
end

-- Instance ids of the study that must be sent now (eligible and not yet sent).
local function pendingInstances(studyId, conf)
  local pending = {}
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  for _, s in ipairs(series) do
    local modality = string.upper(trim(s['MainDicomTags']['Modality']))
    if conf.modalities[modality] then
      for _, instanceId in ipairs(s['Instances']) do
        local meta = ParseJson(RestApiGet('/instances/' .. instanceId .. '/metadata?expand'))
        local remoteAet = string.upper(trim(meta['RemoteAET']))
        -- An SR uploaded over REST or STOW-RS has no RemoteAET: it may be the plugin's own result
        -- delivered by DICOMweb, so SRs are routed only when a device sent them over DICOM.
        local srFromDevice = modality ~= 'SR' or meta['Origin'] == 'DicomProtocol'
        if remoteAet ~= conf.pluginAet and srFromDevice and meta['CdsRoutedAt'] == nil then
          table.insert(pending, instanceId)
        end
      end
    end
  end
  return pending
end

function OnStableStudy(studyId, tags, metadata)
  local conf = routingConfig()
  local ok, pending = pcall(pendingInstances, studyId, conf)
  if not ok then
    print('CDS routing: cannot list instances of study ' .. studyId .. ': ' .. tostring(pending))
    return
  end
  if #pending == 0 then
    return
  end
  local request = {
    Resources = pending,
    Synchronous = conf.synchronous,
    Permissive = false,
  }
  local sent, answer = pcall(RestApiPost, '/modalities/' .. conf.modality .. '/store', DumpJson(request, true))
  if not sent then
    -- Nothing is marked: the next stable event of this study sends these instances again.
    print('CDS routing: sending study ' .. studyId .. ' to ' .. conf.modality .. ' failed: ' .. tostring(answer))
    return
  end
  local stamp
  local job = ''
  if conf.synchronous then
    stamp = 'sent ' .. os.date('!%Y-%m-%dT%H:%M:%SZ')
  else
    local parsed = ParseJson(answer)
    job = parsed and parsed['ID'] or ''
    stamp = 'pending job ' .. job
  end
  for _, instanceId in ipairs(pending) do
    RestApiPut('/instances/' .. instanceId .. '/metadata/CdsRoutedAt', stamp)
  end
  print('CDS routing: study ' .. studyId .. ': ' .. #pending .. ' instance(s) sent to ' .. conf.modality
    .. (job ~= '' and (' (job ' .. job .. ')') or ''))
end

-- The C-STORE job's instances, when the job is a store to the plugin (else nil).
local function pluginStoreJob(jobId)
  local ok, job = pcall(function() return ParseJson(RestApiGet('/jobs/' .. jobId)) end)
  if not ok or job == nil or job['Type'] ~= 'DicomModalityStore' then
    return nil
  end
  local content = job['Content'] or {}
  if string.upper(content['RemoteAet'] or '') ~= routingConfig().pluginAet then
    return nil
  end
  return job
end

-- An asynchronous C-STORE to the plugin succeeded: the marks become final.
function OnJobSuccess(jobId)
  local job = pluginStoreJob(jobId)
  if job == nil then
    return
  end
  local stamp = 'sent ' .. os.date('!%Y-%m-%dT%H:%M:%SZ') .. ' job ' .. jobId
  for _, instanceId in ipairs(job['Content']['ParentResources'] or {}) do
    pcall(RestApiPut, '/instances/' .. instanceId .. '/metadata/CdsRoutedAt', stamp)
  end
end

-- An asynchronous C-STORE to the plugin failed: remove the marks so that the next stable event of
-- the study sends these instances again (POST /jobs/<id>/resubmit also works: success re-marks).
function OnJobFailure(jobId)
  local job = pluginStoreJob(jobId)
  if job == nil then
    return
  end
  for _, instanceId in ipairs(job['Content']['ParentResources'] or {}) do
    pcall(RestApiDelete, '/instances/' .. instanceId .. '/metadata/CdsRoutedAt')
  end
  print('CDS routing: job ' .. jobId .. ' to ' .. job['Content']['RemoteAet'] .. ' failed: '
    .. tostring(job['ErrorDetails'] or job['ErrorDescription'])
    .. '; instances unmarked, resent on the next stable event or with POST /jobs/' .. jobId .. '/resubmit')
end

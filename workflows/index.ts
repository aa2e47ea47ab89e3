/** Every pops workflow, for the worker's bundle. One workflow per file. */
export { retrainModel } from './retrainModel.js';
export { mergeIdentities } from './mergeIdentities.js';
export { unmergeIdentity } from './unmergeIdentity.js';
export { remergeIdentity } from './remergeIdentity.js';
export { checkFeatureConsistency } from './checkFeatureConsistency.js';
export { backfillFeatures } from './backfillFeatures.js';
export { materializeFeatures } from './materializeFeatures.js';
export { rollbackModel } from './rollbackModel.js';
export { monitorDrift } from './monitorDrift.js';
export { rolloutModel } from './rolloutModel.js';
export { runPlaybook } from './runPlaybook.js';
export { runCampaign } from './runCampaign.js';
export { sendNotice } from './sendNotice.js';
export { measureCampaignLift } from './measureCampaignLift.js';
export { deletePersonData } from './deletePersonData.js';
export { exportPersonData } from './exportPersonData.js';
export { enforceRetention } from './enforceRetention.js';

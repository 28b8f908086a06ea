/** The one HTML page of `cbr ui`; its behaviour is in assets/app.js, its look in assets/app.css. */
export function page(token: string, canCommand: boolean): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="cbr-token" content="${token}">
<meta name="cbr-can-command" content="${canCommand}">
<title>cbr — workflows</title>
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body>
<header>
  <h1>cbr</h1>
  <span id="bus" class="badge" data-connected="false">bus: connecting…</span>
  <span id="counts" class="muted"></span>
  <span id="mode" class="badge">${canCommand ? 'commands enabled (signed)' : 'read-only'}</span>
</header>
<main>
  <section id="hosts" aria-label="hosts and workflows"><p class="muted" id="empty">No workflow events yet. Events appear as agents publish them.</p></section>
  <section id="detail" aria-label="selected workflow"><p class="muted">Select a workflow.</p></section>
</main>
<section id="start" ${canCommand ? '' : 'hidden'} aria-label="start a workflow">
  <form id="start-backup">
    <h2>Start a backup</h2>
    <label>host <input name="host" required list="host-list" autocomplete="off"></label>
    <label>name <input name="name" required></label>
    <label>compression <select name="compression"><option>zstd</option><option>gzip</option><option>none</option></select></label>
    <label>strategy <select name="strategy"><option value="">the host's default</option><option>full</option><option>incremental</option></select></label>
    <button type="submit">backup-create</button>
  </form>
  <form id="start-restore">
    <h2>Restore a backup</h2>
    <label>host <input name="host" required list="host-list" autocomplete="off"></label>
    <label>backup id <input name="backupId" required></label>
    <label>instance <input name="instanceName" required></label>
    <label>cluster name <input name="clusterName" placeholder="the instance name"></label>
    <label><input type="checkbox" name="force"> replace existing data</label>
    <button type="submit">create --backup</button>
  </form>
  <datalist id="host-list"></datalist>
  <p id="start-result" role="status"></p>
</section>
</body>
</html>
`;
}

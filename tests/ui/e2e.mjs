// End-to-end test of the admin web UI in a real Chromium, driven by
// playwright-core. Started by tests/it/ui.rs against a running gateway
// (server-everything connected as `everything`); throws (exit code 1) at
// the first thing that is not as a user must see it.
//
// Environment:
//   UI_BASE          the gateway's base URL (http://127.0.0.1:PORT)
//   UI_PASSWORD      the password of the user `admin`
//   UI_PASTE_URL     a Streamable HTTP MCP server to add by pasting JSON
//                    (the fixture started with --hostile: its tool
//                    `markup` has markup and script in its description)
//   UI_SCREENSHOTS   the folder the screenshots (PNG) are written to
//   PLAYWRIGHT_CORE  the playwright-core package folder
//   CHROMIUM         the Chromium executable

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('UI_BASE');
const password = env('UI_PASSWORD');
const pasteUrl = env('UI_PASTE_URL');
const shots = env('UI_SCREENSHOTS');
const require = createRequire(import.meta.url);
const { chromium } = require(env('PLAYWRIGHT_CORE'));

mkdirSync(shots, { recursive: true });
const log = (...args) => console.error('[ui-e2e]', ...args);

// What no page may do: log errors, throw, or open dialogs (an alert is
// what the XSS payload would do).
const problems = [];
const visited = new Set();

function watch(page) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught exception on ${page.url()}: ${e.message}`));
  page.on('dialog', async (dialog) => {
    problems.push(`dialog (${dialog.type()}) on ${page.url()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) visited.add(new URL(frame.url()).pathname);
  });
}

async function shot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log('screenshot', file);
}

// Keyboard basics on the current page: every visible form control has a
// label, every button and link can take the focus.
async function checkAccessible(page) {
  const issues = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden' || el.closest('details:not([open])')) continue;
      if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) {
        out.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name || el.id}`);
      }
    }
    for (const el of document.querySelectorAll('button, a[href]')) {
      if (el.tabIndex < 0) out.push(`not focusable: ${el.outerHTML.slice(0, 80)}`);
      if (!el.textContent.trim() && !el.getAttribute('aria-label')) {
        out.push(`no accessible name: ${el.outerHTML.slice(0, 80)}`);
      }
    }
    if (!document.documentElement.lang) out.push('no lang on <html>');
    return out;
  });
  assert.deepEqual(issues, [], `accessibility issues on ${page.url()}`);
}

async function expectFlash(page, text) {
  const flash = page.locator('.flash').filter({ hasText: text });
  await flash.first().waitFor({ timeout: 15000 });
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  chromiumSandbox: false,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  watch(page);

  // --- Not logged in: any page sends to the login form, with the headers.
  const first = await page.goto(`${base}/ui/servers`);
  assert.equal(new URL(page.url()).pathname, '/ui/login');
  const headers = first.headers();
  const csp = headers['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'/, csp);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, csp);
  assert.match(csp, /frame-ancestors 'none'/, csp);
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.equal(headers['x-content-type-options'], 'nosniff');
  // same-origin, not no-referrer: with no-referrer Chromium posts forms
  // with `Origin: null`, which the listener refuses.
  assert.equal(headers['referrer-policy'], 'same-origin');
  await checkAccessible(page);
  await shot(page, 'login');

  // --- A wrong password is refused, and says so.
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#login-error').waitFor();
  assert.match(await page.locator('#login-error').textContent(), /invalid username or password/);

  // --- Logging in with the keyboard alone.
  await page.getByLabel('Username').focus();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('admin');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'password');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.waitForURL(`${base}/ui/servers`);
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === 'metamcp_session');
  assert.ok(session, 'the session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');

  // --- Servers: everything is listed with its live status.
  const everything = page.locator('tr[data-server="everything"]');
  await everything.waitFor();
  await page.waitForFunction(() => {
    const row = document.querySelector('tr[data-server="everything"] [data-field="status"]');
    return row && row.textContent.trim() === 'ready';
  }, null, { timeout: 30000 });
  await checkAccessible(page);

  // --- One server's page: its definition and stderr tail.
  await everything.getByRole('link', { name: 'everything' }).click();
  await page.waitForURL(/\/ui\/server\?name=everything/);
  assert.equal((await page.locator('#server-status').textContent()).trim(), 'ready');
  assert.match(await page.locator('#definition').textContent(), /"type": "stdio"/);
  assert.match(await page.locator('#stderr').textContent(), /Starting default \(STDIO\) server/);
  await checkAccessible(page);
  await shot(page, 'server');
  await page.getByRole('link', { name: /All servers/ }).click();
  await page.waitForURL(`${base}/ui/servers`);

  // --- Add a server by pasting an mcpServers block; its row turns ready
  // by itself (ui.js polls the servers API).
  const block = JSON.stringify({ mcpServers: { hostile: { url: pasteUrl } } }, null, 2);
  await page.getByLabel(/Paste an mcpServers block/).fill(block);
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await expectFlash(page, 'Added hostile.');
  await page.locator('tr[data-server="hostile"]').waitFor();
  await page.waitForFunction(() => {
    const cell = document.querySelector('tr[data-server="hostile"] [data-field="status"]');
    return cell && cell.textContent.trim() === 'ready';
  }, null, { timeout: 30000 });
  await shot(page, 'servers');

  // A bad block is refused with the API's own reason.
  await page.getByLabel(/Paste an mcpServers block/).fill('{"mcpServers": {"bad name!": {"url": "http://127.0.0.1:1/mcp"}}}');
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await expectFlash(page, 'Not added: bad name!');

  // --- Tools: find echo by search.
  await page.getByRole('link', { name: 'Tools' }).click();
  await page.waitForURL(/\/ui\/tools/);
  await page.getByLabel('Search').fill('echo');
  await page.getByLabel('Search').press('Enter');
  await page.waitForURL(/q=echo/);
  const echoRow = page.locator('tr[data-tool="everything__echo"]');
  await echoRow.waitFor();
  await checkAccessible(page);
  await shot(page, 'tools-search');

  // --- Playground: run echo through the pipeline and read the answer.
  await echoRow.getByRole('link', { name: 'Try' }).click();
  await page.waitForURL(/\/ui\/playground\?tool=everything__echo/);
  await page.getByLabel(/message/).fill('hello from the browser <i>');
  await checkAccessible(page);
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('#result').waitFor();
  const echoed = await page.locator('#result pre.text').first().textContent();
  assert.equal(echoed, 'Echo: hello from the browser <i>');
  assert.match(await page.locator('#duration').textContent(), /^\d+(\.\d+)? ms$/);
  await shot(page, 'playground');

  // Numbers, enums and booleans from the schema; images and structured
  // content in the result.
  await page.goto(`${base}/ui/playground?tool=everything__get-sum`);
  await page.getByLabel(/^a/).fill('2');
  await page.getByLabel(/^b/).fill('3.5');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('#result').waitFor();
  assert.match(await page.locator('#result pre.text').first().textContent(), /5\.5/);

  await page.goto(`${base}/ui/playground?tool=everything__get-annotated-message`);
  await page.getByLabel(/messageType/).selectOption({ label: 'success' });
  await page.getByLabel(/includeImage/).selectOption('true');
  await page.getByRole('button', { name: 'Run' }).click();
  const image = page.locator('#result figure img');
  await image.waitFor();
  assert.match(await image.getAttribute('src'), /^data:image\/png;base64,/);
  assert.ok(await image.evaluate((img) => img.complete && img.naturalWidth > 0), 'the image shows');
  await shot(page, 'playground-image');

  await page.goto(`${base}/ui/playground?tool=everything__get-structured-content`);
  await page.getByLabel(/location/).selectOption({ label: 'Chicago' });
  await page.getByRole('button', { name: 'Run' }).click();
  const structured = JSON.parse(await page.locator('#result pre.structured').textContent());
  assert.equal(typeof structured.temperature, 'number');

  // A tool-level error shows as an error.
  await page.goto(`${base}/ui/playground?tool=hostile__fail`);
  await page.getByLabel(/message/).fill('it broke');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('#result.is-error').waitFor();

  // --- XSS: the hostile tool's description is text, and nothing runs.
  await page.goto(`${base}/ui/tools?server=hostile`);
  const markup = page.locator('tr[data-tool="hostile__markup"] td.description');
  await markup.waitFor();
  const shown = await markup.textContent();
  assert.ok(shown.includes("<script>window.__xss = 1; alert('xss')</script>"), shown);
  assert.ok(shown.includes('<b>bold</b>'), shown);
  const injected = await page.evaluate(() => ({
    xss: window.__xss,
    scripts: [...document.scripts].map((s) => s.src),
    bold: document.querySelectorAll('td.description b').length,
    images: document.querySelectorAll('img').length,
  }));
  assert.deepEqual(injected, {
    xss: undefined,
    scripts: [`${base}/ui/assets/ui.js`],
    bold: 0,
    images: 0,
  });
  await shot(page, 'xss-tools');
  await page.goto(`${base}/ui/playground?tool=hostile__markup`);
  assert.ok((await page.locator('#tool-description').textContent()).includes('<script>'));
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('#result').waitFor();
  assert.ok((await page.locator('#result pre.text').textContent()).includes('</textarea></pre>'));
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  await shot(page, 'xss-playground');

  // --- Disable echo from the tools page.
  await page.goto(`${base}/ui/tools?q=echo`);
  await page.locator('tr[data-tool="everything__echo"]').getByRole('button', { name: 'Disable' }).click();
  await expectFlash(page, 'everything__echo disabled.');
  await page.waitForURL(/q=echo/);

  // --- CSRF: state changes without this session's token are refused.
  for (const [url, form] of [
    ['/ui/tools/toggle', { name: 'everything__get-sum', enabled: 'false' }],
    ['/ui/tools/toggle', { name: 'everything__get-sum', enabled: 'false', csrf_token: 'forged' }],
    ['/ui/servers/action', { name: 'everything', action: 'restart' }],
    ['/ui/servers/import', { servers: '{"x": {"url": "http://127.0.0.1:1/mcp"}}' }],
    ['/ui/logout', {}],
  ]) {
    const r = await page.request.post(`${base}${url}`, { form, maxRedirects: 0 });
    assert.equal(r.status(), 403, `${url} without the CSRF token: ${r.status()}`);
  }
  // The API itself refuses a cookie-authenticated change without the header.
  const api = await page.request.patch(`${base}/api/v1/tools/everything__get-sum`, {
    data: { enabled: false },
  });
  assert.equal(api.status(), 403);
  // And a login form without its token is refused too.
  const anonymous = await browser.newContext();
  const login = await anonymous.request.post(`${base}/ui/login`, {
    form: { username: 'admin', password },
    maxRedirects: 0,
  });
  assert.equal(login.status(), 403);
  assert.equal((await anonymous.cookies(base)).find((c) => c.name === 'metamcp_session'), undefined);
  await anonymous.close();

  // --- Server buttons: disable, enable, restart, remove.
  const statusOf = (name) =>
    page.locator(`tr[data-server="${name}"] [data-field="status"]`).textContent();
  const waitStatus = (name, want) =>
    page.waitForFunction(([n, w]) => {
      const cell = document.querySelector(`tr[data-server="${n}"] [data-field="status"]`);
      return cell && cell.textContent.trim() === w;
    }, [name, want], { timeout: 30000 });
  await page.goto(`${base}/ui/servers`);
  const hostileRow = page.locator('tr[data-server="hostile"]');
  await hostileRow.getByRole('button', { name: 'Disable' }).click();
  await expectFlash(page, 'hostile disabled.');
  assert.equal((await statusOf('hostile')).trim(), 'disabled');
  await hostileRow.getByRole('button', { name: 'Enable' }).click();
  await expectFlash(page, 'hostile enabled.');
  await waitStatus('hostile', 'ready');
  await page.locator('tr[data-server="everything"]').getByRole('button', { name: 'Restart' }).click();
  await expectFlash(page, 'everything restarting.');
  await waitStatus('everything', 'ready');
  // Removing takes two steps, both with the keyboard.
  await hostileRow.locator('summary').focus();
  await page.keyboard.press('Enter');
  await hostileRow.getByRole('button', { name: 'Remove hostile' }).focus();
  await page.keyboard.press('Enter');
  await expectFlash(page, 'hostile removed.');
  assert.equal(await page.locator('tr[data-server="hostile"]').count(), 0);

  // --- API keys: create one (its secret shown once), use it, revoke it.
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.waitForURL(`${base}/ui/keys`);
  await page.getByLabel('Name', { exact: true }).fill('browser key');
  await page.getByLabel(/^Scopes/).fill('tools:read');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = await page.locator('#new-key').inputValue();
  assert.ok(key.length > 20, key);
  await checkAccessible(page);
  await shot(page, 'keys');
  const outsider = await browser.newContext();
  const asKey = () => outsider.request.get(`${base}/api/v1/tools?limit=1`, { headers: { 'x-api-key': key } });
  assert.equal((await asKey()).status(), 200);
  await page.goto(`${base}/ui/keys`);
  assert.equal(await page.locator('#new-key').count(), 0, 'the key is shown once');
  await page.getByRole('button', { name: 'Revoke browser key' }).click();
  await expectFlash(page, 'The key is revoked.');
  assert.equal((await asKey()).status(), 401);
  await outsider.close();

  // --- Audit: the playground's call is in the trail, as the user's, and
  // the chains verify. (Records are written in the background: reload
  // until it is there.)
  const auditUrl = `${base}/ui/audit?tool=everything__echo&kind=tool_call`;
  const deadline = Date.now() + 20000;
  for (;;) {
    await page.goto(auditUrl);
    if (await page.locator('#audit tbody td.target', { hasText: 'everything__echo' }).count()) break;
    assert.ok(Date.now() < deadline, 'the echo call never reached the audit page');
    await page.waitForTimeout(250);
  }
  const auditRow = page.locator('#audit tbody tr').filter({ hasText: 'everything__echo' }).first();
  assert.match(await auditRow.textContent(), /admin \(cookie\)[\s\S]*tools\/call[\s\S]*success/);
  await checkAccessible(page);
  await page.getByRole('button', { name: 'Verify the chains' }).click();
  assert.match(await page.locator('#verification').textContent(), /^Intact/);
  await shot(page, 'audit');

  // --- Log out: the session ends.
  await page.goto(`${base}/ui/servers`);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(`${base}/ui/login`);
  await expectFlash(page, 'You are logged out.');
  await page.goto(`${base}/ui/tools`);
  assert.equal(new URL(page.url()).pathname, '/ui/login');

  assert.deepEqual(problems, [], 'pages must not log errors, throw or open dialogs');
  console.log(JSON.stringify({ ok: true, visited: [...visited].sort(), screenshots: shots }));
} finally {
  await browser.close();
}

// Drives the console in headless Chromium. Run by browser_test.go, which
// starts the services and the console and passes, in the environment:
// CONSOLE_URL, API_KEY, CHROMIUM_PATH, SCREENSHOT_DIR, DEAD_MESSAGE_ID,
// FLAKY_ENDPOINT_ID, SOURCE_NAME, PENDING_TASK_ID and FAILED_TASK_ID.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const env = process.env;
const shots = [];

const browser = await chromium.launch({
  executablePath: env.CHROMIUM_PATH,
  headless: true,
  // Root in CI containers cannot use Chromium's sandbox.
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (err) => problems.push('page error: ' + err.message));
  page.on('console', (m) => {
    // A refused key and an unreachable service are answers the console
    // shows; anything else logged as an error (a CSP refusal) is a fault.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push('console: ' + m.text());
  });
  page.on('dialog', (d) => {
    problems.push('dialog opened: ' + d.message());
    d.dismiss();
  });

  const shot = async (name) => {
    const file = path.join(env.SCREENSHOT_DIR, name + '.png');
    await page.screenshot({ path: file, fullPage: true });
    shots.push(file);
  };
  const step = (name) => console.log('step: ' + name);
  const go = async (hash, loaded) => {
    await page.goto(env.CONSOLE_URL + '/' + hash);
    if (loaded) await page.locator(loaded + '[data-loaded]').waitFor();
  };

  step('the CSP header is set on the page');
  const res = await page.goto(env.CONSOLE_URL + '/');
  assert.match(res.headers()['content-security-policy'], /script-src 'self'/);

  step('a wrong key is refused');
  await page.locator('input[name=key]').fill('not-a-key');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();
  await shot('login');

  step('log in');
  await page.locator('input[name=key]').fill(env.API_KEY);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('nav#nav').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('hookyard.apiKey')), env.API_KEY);

  step("the tenant's recent deliveries, with the status code and snippet of the last response");
  await page.locator('#deliveries[data-loaded]').waitFor();
  const failedDelivery = page.locator(`#deliveries tr[data-message="${env.DEAD_MESSAGE_ID}"][data-status=failed]`);
  await failedDelivery.waitFor();
  assert.equal(await failedDelivery.locator('td.status-code').innerText(), '400');
  assert.equal(await failedDelivery.locator('pre.snippet').innerText(), '<b>not yet</b>');

  step('send a message and see its delivery appear');
  await page.locator('input[name=type]').fill('order.created');
  await page.locator('textarea[name=data]').fill('{"order": 42}');
  await page.getByRole('button', { name: 'Send message' }).click();
  const row = page.locator('#deliveries tr[data-status=delivered]');
  await row.waitFor();
  assert.equal(await row.locator('td').nth(5).innerText(), '200');
  step('the response snippet is shown as text, not run');
  assert.equal(await row.locator('pre.snippet').innerText(), `<img src=x onerror="window.__xss=1;document.title='pwned'"><script>window.__xss=2</script>ok`);
  assert.equal(await page.locator('#deliveries img, #deliveries script').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.notEqual(await page.title(), 'pwned');
  await shot('deliveries');

  step("open the message's attempts");
  await row.locator('a').first().click();
  await page.locator('#message tr[data-attempt="1"][data-status-code="200"]').waitFor();
  await shot('message');

  step('resend a dead letter');
  await go('#/dead-letters', '#dead-letters');
  const dead = page.locator(`#dead-letters tr[data-message="${env.DEAD_MESSAGE_ID}"]`);
  await dead.waitFor();
  assert.match(await dead.innerText(), /permanent failure/);
  assert.equal(await dead.locator('pre.snippet').innerText(), '<b>not yet</b>');
  await shot('dead-letters');
  await dead.getByRole('button', { name: 'Resend' }).click();
  await page.locator('#toast').filter({ hasText: 'Resent ' + env.DEAD_MESSAGE_ID }).waitFor();
  await go('#/messages/' + encodeURIComponent(env.DEAD_MESSAGE_ID));
  await page.locator('#message tr[data-attempt="2"][data-status-code="200"]').waitFor();
  await page.locator(`#message tr[data-endpoint="${env.FLAKY_ENDPOINT_ID}"][data-status=delivered]`).waitFor();
  await shot('message-resent');

  step('endpoints with their state');
  await go('#/endpoints', '#endpoints');
  assert.equal(await page.locator('#endpoints tr[data-endpoint]').count(), 2);
  assert.equal(await page.locator(`#endpoints tr[data-endpoint="${env.FLAKY_ENDPOINT_ID}"]`).getAttribute('data-state'), 'healthy');
  step('endpoints with their breaker, in-flight, rate and held deliveries');
  const flaky = page.locator(`#endpoints tr[data-endpoint="${env.FLAKY_ENDPOINT_ID}"]`);
  assert.equal(await flaky.locator('td.breaker').getAttribute('data-breaker'), 'closed');
  assert.match(await flaky.locator('td.in-flight').innerText(), /^0 \/ 10$/);
  assert.equal(await flaky.locator('td.held').innerText(), '0');
  const limited = page.locator('#endpoints tr[data-endpoint]', { hasText: '50/s' });
  assert.match(await limited.locator('.rate-tokens').innerText(), /tokens left$/);
  await shot('endpoints');
  await flaky.getByRole('button', { name: 'Disable' }).click();
  await page.locator(`#endpoints tr[data-endpoint="${env.FLAKY_ENDPOINT_ID}"][data-state=disabled]`).waitFor();
  // A message for the disabled endpoint is held, and counted.
  const sent = await page.evaluate(async (key) => {
    const res = await fetch('/api/dispatcher/v1/messages', { method: 'POST', headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'invoice.held', data: {} }) });
    return res.status;
  }, env.API_KEY);
  assert.equal(sent, 200);
  await flaky.locator('td.held', { hasText: '1' }).waitFor();
  await shot('endpoints-disabled');
  await flaky.getByRole('button', { name: 'Enable' }).click();
  await page.locator(`#endpoints tr[data-endpoint="${env.FLAKY_ENDPOINT_ID}"][data-state=healthy]`).waitFor();
  await flaky.locator('td.held', { hasText: '0' }).waitFor();

  step('sources with their received webhooks and verification failures');
  await go('#/sources', '#sources');
  const src = page.locator(`#sources tr[data-source="${env.SOURCE_NAME}"]`);
  await src.waitFor();
  // The counters reach Redis about once a second; the page refreshes.
  await src.locator('td.verification-failures', { hasText: '1' }).waitFor();
  assert.equal(await src.locator('td.received').innerText(), '1');
  assert.equal(await src.locator('td.accepted').innerText(), '0');
  await shot('sources');

  step('cancel a task');
  await go('#/tasks?state=pending', '#tasks');
  const task = page.locator(`#tasks tr[data-task="${env.PENDING_TASK_ID}"]`);
  await task.waitFor();
  await shot('tasks-pending');
  await task.getByRole('button', { name: 'Cancel' }).click();
  await page.locator('#toast').filter({ hasText: 'Task ' + env.PENDING_TASK_ID + ': cancelled' }).waitFor();
  await task.waitFor({ state: 'detached' });
  await go('#/tasks?state=cancelled', '#tasks');
  await page.locator(`#tasks tr[data-task="${env.PENDING_TASK_ID}"][data-state=cancelled]`).waitFor();
  await shot('tasks-cancelled');

  step('a failed task with its error');
  await go('#/tasks?state=failed', '#tasks');
  const failed = page.locator(`#tasks tr[data-task="${env.FAILED_TASK_ID}"]`);
  await failed.waitFor();
  assert.ok((await failed.getByRole('button', { name: 'Retry' }).count()) === 1);
  await shot('tasks-failed');
  await go('#/tasks/' + encodeURIComponent(env.FAILED_TASK_ID), '#task');
  await shot('task');

  step('queue depths');
  await go('#/queues', '#queues');
  await page.locator('#queues tr[data-queue=hooks]').waitFor();
  step("the dispatcher's queue depths");
  const deliveries = page.locator('#delivery-queues tr[data-kind=deliveries]');
  await deliveries.waitFor();
  assert.match(await deliveries.locator('td.ready').innerText(), /^\d+$/);
  assert.equal(await page.locator('#delivery-queues tr[data-kind=events]').count(), 1);
  assert.equal(await page.locator('#delivery-queues tr[data-kind=dead_letter]').count(), 2);
  assert.ok((await page.locator('#delivery-queues tr[data-kind=delay]').count()) > 1);
  await shot('queues');

  step('cache namespaces');
  await go('#/cache', '#namespaces');
  await page.locator('#namespaces tr[data-namespace=catalog]').waitFor();
  step('cache namespaces with their hit ratio');
  await page.locator('#namespaces tr[data-namespace=catalog] td.hit-ratio', { hasText: '100%' }).waitFor();
  assert.equal(await page.locator('#namespaces tr[data-namespace=catalog] td.hits').innerText(), '2');
  await shot('cache');

  step('log out forgets the key');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('input[name=key]').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('hookyard.apiKey')), null);
} finally {
  await browser.close();
}
assert.deepEqual(problems, []);
console.log('screenshots:\n  ' + shots.join('\n  '));
console.log('ok');

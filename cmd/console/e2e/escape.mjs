// Visits every console page while the API answers markup in every text
// field (escape_test.go), and checks that it is shown as text and that no
// element was made from it.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const env = process.env;
const P = env.PAYLOAD;
const id = encodeURIComponent(P);
const pages = [
  ['#/deliveries', '#deliveries'],
  ['#/messages/' + id, '#message'],
  ['#/dead-letters', '#dead-letters'],
  ['#/endpoints', '#endpoints'],
  ['#/sources', '#sources'],
  ['#/tasks?state=failed', '#tasks'],
  ['#/tasks/' + id, '#task'],
  ['#/queues', '#queues'],
  ['#/cache', '#namespaces'],
];

const browser = await chromium.launch({
  executablePath: env.CHROMIUM_PATH,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const problems = [];
let checked = 0;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (err) => problems.push('page error: ' + err.message));
  // A CSP refusal here would mean markup reached the DOM.
  page.on('console', (m) => m.type() === 'error' && problems.push('console: ' + m.text()));
  await page.goto(env.CONSOLE_URL + '/');
  await page.locator('input[name=key]').fill('any');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('nav#nav').waitFor();
  for (const [hash, box] of pages) {
    console.log('page ' + hash);
    await page.goto(env.CONSOLE_URL + '/' + hash);
    await page.reload(); // a change of hash alone may not render anew
    await page.locator(box + '[data-loaded]').waitFor();
    const text = await page.locator('main').innerText();
    assert.ok(text.includes(P), hash + ': the payload is not shown as text:\n' + text);
    assert.equal(await page.locator('main img, main script, main iframe, main object').count(), 0, hash + ': markup became elements');
    assert.equal(await page.evaluate(() => window.__xss), undefined, hash + ': script ran');
    checked++;
  }
} finally {
  await browser.close();
}
assert.deepEqual(problems, []);
console.log('pages checked: ' + checked);

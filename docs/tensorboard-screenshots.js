// The README's TensorBoard screenshots (docs/tensorboard-hparams.png, docs/tensorboard-robust.png).
// Taken from the demo at n_train=1000, with TensorBoard running on it:
//   bnsweep run sweeps/demo.yaml --set n_train=1000
//   tensorboard --logdir results/demo --port 6123 &
//   npm install playwright-core && node docs/tensorboard-screenshots.js http://127.0.0.1:6123 docs
// playwright-core drives the system's Chromium (apt-get install chromium; headless, with software
// WebGL for the charts), then the PNGs were reduced to 48 colours:
//   python -c "from PIL import Image; [Image.open(p).convert('RGB').quantize(48, dither=0).save(p, optimize=True)
//              for p in ('docs/tensorboard-hparams.png', 'docs/tensorboard-robust.png')]"
const { chromium } = require('playwright-core');

(async () => {
  const [url, out] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--enable-unsafe-swiftshader'] });

  // HPARAMS: the adversarial stage only, sorted by final robust accuracy, highest first
  let page = await browser.newPage({ viewport: { width: 1780, height: 700 } });
  await page.goto(`${url}/#hparams`);
  await page.getByText('accuracy/final_robust').first().waitFor();
  await page.locator('paper-checkbox', { hasText: /^\s*pretrain\s*$/ }).click();
  await page.locator('paper-dropdown-menu[label="Sort by"]').click();
  await page.getByRole('option', { name: 'accuracy/final_robust', exact: true }).first().click();
  await page.locator('paper-dropdown-menu[label="Direction"]').click();
  await page.getByRole('option', { name: 'Descending' }).first().click();
  for (const radius of ['2', '4']) {  // room for the columns of the study's radius
    await page.locator('paper-checkbox', { hasText: new RegExp(`^\\s*accuracy/robust@${radius}\\s*$`) }).click();
  }
  await page.locator('paper-checkbox', { hasText: /^\s*init\s*$/ }).scrollIntoViewIfNeeded();
  await page.waitForTimeout(3000);
  await page.screenshot({ path: `${out}/tensorboard-hparams.png` });

  // TIME SERIES: the card of robust accuracy at 8/255, the adversarial runs, unsmoothed
  page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  await page.goto(`${url}/?tagFilter=accuracy%2Frobust%408&runFilter=adv%2F#timeseries`);
  await page.getByText('accuracy/robust@8').first().waitFor();
  const smoothing = page.locator('input.slider-input').first();
  await smoothing.fill('0');
  await smoothing.press('Enter');
  await page.getByText('Ignore outliers in chart scaling').click();
  await page.locator('button[aria-label="Close side pane"], .settings-button').first().click().catch(() => {});
  await page.locator('button[aria-label="Toggle full size mode"]').first().click();
  await page.waitForTimeout(5000);
  await page.screenshot({ path: `${out}/tensorboard-robust.png` });
  await browser.close();
})().catch((err) => { console.error(err); process.exit(1); });

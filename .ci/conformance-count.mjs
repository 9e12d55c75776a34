// Counts the passes in a results file of the HTTP caching test suite
// (http-cache-tests): `node conformance-count.mjs <suite dir> <results.json>`
// prints `required <passed>/<all> total <passed>/<all>` (the tests run
// against a proxy: browser-only ones are left out) and, with SHOW_FAILED set,
// the ids of the required tests that failed.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile] = process.argv.slice(2)
const load = async (rel) =>
  (await import(pathToFileURL(path.resolve(suiteDir, rel)).href)).default
const suites = await load('tests/index.mjs')
suites.push(await load('tests/surrogate-control.mjs'))
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

let required = 0
let requiredPassed = 0
let total = 0
let passed = 0
const failed = []
for (const suite of suites) {
  for (const test of suite.tests) {
    // Tests for browser caches only are not run against a proxy.
    if (test.browser_only === true) continue
    const isRequired = test.kind === undefined || test.kind === 'required'
    const ok = results[test.id] === true
    total += 1
    if (ok) passed += 1
    if (isRequired) {
      required += 1
      if (ok) requiredPassed += 1
      else failed.push(test.id)
    }
  }
}
console.log(`required ${requiredPassed}/${required} total ${passed}/${total}`)
if (process.env.SHOW_FAILED) console.log(failed.join('\n'))

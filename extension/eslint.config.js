// ESLint's configuration for the extension. tests/test_lint.py runs it; by hand, from the repository root:
//   tools/lint/node_modules/.bin/eslint --config extension/eslint.config.js extension
// ESLint and its packages live in tools/lint/ (install/setup.sh runs `npm ci` there), so this folder,
// which the browser loads as it is, never holds a node_modules/. build_zip.py leaves this file out.

import { createRequire } from "node:module";

const require = createRequire(new URL("../tools/lint/package.json", import.meta.url));
const js = require("@eslint/js");
const globals = require("globals");

export default [
  js.configs.recommended,
  {
    linterOptions: { reportUnusedDisableDirectives: "error" },
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      // Chromium's `chrome` and Firefox's `browser` (webextensions), and the DOM of extension pages.
      globals: { ...globals.browser, ...globals.webextensions },
    },
    rules: {
      "no-unused-vars": ["error", { args: "after-used" }],
      eqeqeq: ["error", "always", { null: "ignore" }],   // `x == null`: null or undefined
      "no-implicit-globals": ["error", { lexicalBindings: false }],
      "prefer-const": "error",
      "no-var": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-throw-literal": "error",
      "no-self-compare": "error",
      "no-template-curly-in-string": "error",
      "no-unmodified-loop-condition": "error",
      "no-unreachable-loop": "error",
      "no-promise-executor-return": "error",
    },
  },
  {
    // The service worker and what only it imports.
    files: ["background/**/*.js"],
    languageOptions: { globals: { ...globals.serviceworker, ...globals.webextensions } },
  },
  {
    // Content scripts are classic scripts sharing one isolated world per frame (and bridge.js is
    // loaded as one by them): what one defines for the next is marked `/* exported */` there and
    // `/* global */` where it is used.
    files: ["content/**/*.js", "shared/bridge.js", "shared/formats.js"],
    languageOptions: { sourceType: "script" },
  },
  {
    // Their top-level functions are meant to be shared that way; the isolated world is LowKey's own,
    // the page never sees it. (page-world.js and page-file-system.js, in the page's world, keep the rule: they add nothing.)
    files: ["content/indicator.js", "content/protection.js", "content/file-system-access.js", "content/interception.js"],
    rules: { "no-implicit-globals": "off" },
  },
  {
    // Run in the page's own world: the DOM, no extension APIs.
    files: ["content/page-world.js", "content/page-file-system.js"],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { globals: { ...globals.node } },
  },
];

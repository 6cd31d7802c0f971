import { building } from '$app/env';
import { defineEnvVars } from '@sveltejs/kit/env';

/**
 * Runtime environment of the Node server (SvelteKit 3 explicit env vars).
 *
 * Nothing here is static: the build happens on a developer machine without these
 * variables, and the server reads them from its systemd EnvironmentFile when it
 * starts. A missing or malformed value makes `node build` exit at startup. (During
 * `vite build` SvelteKit also loads this file to analyse the routes; a missing value is
 * accepted then.)
 */
export const variables = defineEnvVars({
	PUBLIC_API_BASE: {
		// Only the Node server talks to the API, so the value never goes to the browser.
		// (The PUBLIC_ prefix is kept because that is the name used in the server's env file.)
		public: false,
		static: false,
		description:
			'Base URL of the innercontext API as seen from the Node server, e.g. http://127.0.0.1:8000',
		schema: (value) => {
			if (!value) {
				if (building) return '';
				throw new Error('PUBLIC_API_BASE must be set, e.g. PUBLIC_API_BASE=http://127.0.0.1:8000');
			}
			let url: URL;
			try {
				url = new URL(value);
			} catch {
				throw new Error(`PUBLIC_API_BASE is not a valid URL: ${JSON.stringify(value)}`);
			}
			if (url.protocol !== 'http:' && url.protocol !== 'https:') {
				throw new Error('PUBLIC_API_BASE must be an http:// or https:// URL');
			}
			return value.replace(/\/+$/, '');
		}
	}
});

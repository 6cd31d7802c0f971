import adapter from '@sveltejs/adapter-node';
import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

export default defineConfig({
	plugins: [
		sveltekit({
			// `node build` serves the app; everything it needs is bundled into build/,
			// so the server needs no node_modules (see README.md).
			adapter: adapter(),
			// An open page learns of a new release from the version header of every data
			// response, when the tab becomes visible again, and by asking for
			// /_app/version.json every 5 minutes (an idle page); the next navigation after
			// that is a full page load (src/routes/+layout.svelte).
			version: {
				pollInterval: 300_000
			},
			// The Content-Security-Policy of every page, sent by the Node server with a fresh
			// nonce for SvelteKit's inline start-up script. nginx adds its own, stricter policy
			// only to responses that carry none (static files, the API, its error pages).
			csp: {
				mode: 'auto',
				directives: {
					'default-src': ['self'],
					'script-src': ['self'],
					'style-src': ['self'],
					// SvelteKit's live-region announcer is a div with a style attribute.
					'style-src-attr': ['unsafe-inline'],
					'img-src': ['self', 'data:'],
					'font-src': ['self'],
					'connect-src': ['self'],
					'object-src': ['none'],
					'base-uri': ['self'],
					'form-action': ['self'],
					'frame-ancestors': ['none']
				}
			}
		})
	]
});

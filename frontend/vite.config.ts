import adapter from '@sveltejs/adapter-node';
import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

export default defineConfig({
	plugins: [
		sveltekit({
			// `node build` serves the app; everything it needs is bundled into build/,
			// so the server needs no node_modules (see README.md).
			adapter: adapter()
		})
	]
});

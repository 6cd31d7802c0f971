// Unit tests of the "new release: next navigation is a full load" decision.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fullLoadFor, type PendingNavigation } from './version.ts';

const to = { url: new URL('http://innercontext.lan/products/3') };
const nav = (type: string, extra: Partial<PendingNavigation> = {}): PendingNavigation => ({
	type,
	willUnload: false,
	to,
	...extra
});

describe('fullLoadFor', () => {
	test('stays client-side while no new release is known', () => {
		for (const type of ['link', 'goto', 'popstate']) {
			assert.equal(fullLoadFor(false, nav(type)), null);
		}
	});

	test('turns an in-app link or goto into a full load of its target', () => {
		assert.equal(fullLoadFor(true, nav('link')), to.url.href);
		assert.equal(fullLoadFor(true, nav('goto')), to.url.href);
	});

	test('leaves back/forward client-side (the history entry already moved)', () => {
		assert.equal(fullLoadFor(true, nav('popstate')), null);
	});

	test('leaves navigations alone that unload the page anyway or have no target', () => {
		assert.equal(fullLoadFor(true, nav('link', { willUnload: true })), null);
		assert.equal(fullLoadFor(true, nav('leave', { willUnload: true, to: null })), null);
		assert.equal(fullLoadFor(true, nav('goto', { to: null })), null);
	});

	test('leaves form submissions to SvelteKit', () => {
		assert.equal(fullLoadFor(true, nav('form')), null);
	});
});

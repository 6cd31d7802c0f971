// Unit tests of the product list's paging: the `after` of a URL, a product id, and cutting the
// page asked for with one row more than it shows.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pageOf, parseAfter, parseProductId, PRODUCT_ID_MAX } from './paging.ts';

const after = (query: string) => parseAfter(new URLSearchParams(query));

describe('parseProductId', () => {
	test('a positive whole number up to the largest id', () => {
		assert.equal(parseProductId('1'), 1);
		assert.equal(parseProductId('100'), 100);
		assert.equal(parseProductId(String(PRODUCT_ID_MAX)), PRODUCT_ID_MAX);
	});

	test('nothing else', () => {
		for (const value of [
			'',
			'0',
			'-1',
			'+1',
			'01',
			'1.5',
			'1e3',
			' 1',
			'1 ',
			'0x10',
			'abc',
			String(PRODUCT_ID_MAX + 1),
			'99999999999'
		]) {
			assert.equal(parseProductId(value), null, JSON.stringify(value));
		}
	});
});

describe('parseAfter', () => {
	test('no after is the first page', () => {
		assert.deepEqual(after(''), { after: null });
		assert.deepEqual(after('other=1'), { after: null });
	});

	test('one valid after', () => {
		assert.deepEqual(after('after=100'), { after: 100 });
	});

	test('an empty, repeated or invalid after is refused', () => {
		for (const query of ['after=', 'after=0', 'after=abc', 'after=-5', 'after=1&after=2']) {
			assert.deepEqual(after(query), { invalid: true }, query);
		}
	});
});

describe('pageOf', () => {
	const rows = (...ids: number[]) => ids.map((id) => ({ id }));

	test('one row more than the page: there is a next page, after the last row shown', () => {
		assert.deepEqual(pageOf(rows(3, 5, 8), 2), { items: rows(3, 5), next: 5 });
	});

	test('a full page and no more: the last page', () => {
		assert.deepEqual(pageOf(rows(3, 5), 2), { items: rows(3, 5), next: null });
	});

	test('a short or empty page: the last page', () => {
		assert.deepEqual(pageOf(rows(3), 2), { items: rows(3), next: null });
		assert.deepEqual(pageOf(rows(), 2), { items: [], next: null });
	});
});

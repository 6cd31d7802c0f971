// Unit tests for the pure helpers; run with `pnpm test` (Node's built-in test runner,
// which strips the TypeScript types itself on Node 24).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatPrice, formatTimestamp, safeHttpUrl } from './format.ts';
import { parseProductForm } from './product-form.ts';
import { describeApiError, isArrayOf, isProduct } from './api-data.ts';

describe('formatPrice', () => {
	test('formats a decimal string as euros', () => {
		assert.equal(formatPrice('12.50', 'EUR'), '€12.50');
		assert.equal(formatPrice('1234.5', 'EUR'), '€1,234.50');
		assert.equal(formatPrice('0', 'EUR'), '€0.00');
	});

	test('keeps precision that a float would lose', () => {
		assert.equal(formatPrice('9007199254740993.10', 'EUR'), '€9,007,199,254,740,993.10');
	});

	test('shows a dash when there is no price', () => {
		assert.equal(formatPrice(null, 'EUR'), '—');
		assert.equal(formatPrice('  ', 'EUR'), '—');
	});

	test('falls back to the raw text for odd input', () => {
		assert.equal(formatPrice('n/a', 'EUR'), 'n/a');
		assert.equal(formatPrice('12.50', 'NOT-A-CURRENCY'), '12.50 NOT-A-CURRENCY');
	});
});

describe('formatTimestamp', () => {
	test('formats in UTC regardless of the offset given', () => {
		assert.equal(formatTimestamp('2026-03-07T14:05:00Z'), '7 Mar 2026, 14:05 UTC');
		assert.equal(formatTimestamp('2026-03-07T15:05:00+01:00'), '7 Mar 2026, 14:05 UTC');
		assert.equal(formatTimestamp('2026-01-01T00:00:00.123456+00:00'), '1 Jan 2026, 00:00 UTC');
	});

	test('shows a dash for missing or invalid values', () => {
		assert.equal(formatTimestamp(null), '—');
		assert.equal(formatTimestamp('yesterday'), '—');
	});
});

describe('safeHttpUrl', () => {
	test('accepts http and https', () => {
		assert.equal(safeHttpUrl('https://shop.example/a?b=1'), 'https://shop.example/a?b=1');
		assert.equal(safeHttpUrl('http://shop.example'), 'http://shop.example/');
	});

	test('rejects everything else', () => {
		assert.equal(safeHttpUrl('javascript:alert(1)'), null);
		assert.equal(safeHttpUrl('data:text/html,hi'), null);
		assert.equal(safeHttpUrl('/relative'), null);
		assert.equal(safeHttpUrl(null), null);
	});
});

describe('parseProductForm', () => {
	const form = (entries: Record<string, string>) => {
		const data = new FormData();
		for (const [key, value] of Object.entries(entries)) data.set(key, value);
		return data;
	};

	test('trims the input and turns an empty URL into null', () => {
		assert.deepEqual(parseProductForm(form({ name: '  Rice toner ', url: ' ' })), {
			ok: true,
			product: { name: 'Rice toner', url: null }
		});
	});

	test('keeps a valid URL', () => {
		const result = parseProductForm(form({ name: 'A', url: 'https://shop.example/a' }));
		assert.deepEqual(result, { ok: true, product: { name: 'A', url: 'https://shop.example/a' } });
	});

	test('reports a missing name and a bad URL, keeping what was typed', () => {
		const result = parseProductForm(form({ name: '', url: 'javascript:alert(1)' }));
		assert.equal(result.ok, false);
		if (result.ok) return;
		assert.deepEqual(result.values, { name: '', url: 'javascript:alert(1)' });
		assert.ok(result.errors.name);
		assert.ok(result.errors.url);
	});

	test('rejects an overly long name', () => {
		const result = parseProductForm(form({ name: 'x'.repeat(201) }));
		assert.equal(result.ok, false);
	});
});

describe('API data checks', () => {
	const product = {
		id: 1,
		name: 'A',
		url: null,
		current_price: '12.50',
		currency: 'EUR',
		price_updated_at: '2026-03-07T14:05:00Z'
	};

	test('accepts the documented product shape', () => {
		assert.ok(isProduct(product));
		assert.ok(isArrayOf([product, { ...product, id: 2, current_price: null }], isProduct));
	});

	test('rejects other shapes', () => {
		assert.equal(isProduct({ ...product, id: '1' }), false);
		assert.equal(isProduct({ ...product, current_price: 12.5 }), false);
		assert.equal(isArrayOf({ products: [] }, isProduct), false);
	});

	test('describes FastAPI error bodies', () => {
		assert.equal(describeApiError({ detail: 'Already exists' }), 'Already exists');
		assert.equal(
			describeApiError({ detail: [{ msg: 'Field required' }, { msg: 'Too long' }] }),
			'Field required; Too long'
		);
		assert.equal(describeApiError('boom'), null);
		assert.equal(describeApiError({ detail: [] }), null);
	});
});

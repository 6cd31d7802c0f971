// Unit tests of what a visitor is told when the API answers with an error, the database
// outage above all (the API's 503 with `"error": "database_unavailable"`).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { API_UNAVAILABLE, DATABASE_UNAVAILABLE, apiFailure, errorTitle } from './api-failure.ts';

const outage = {
	detail: 'The database is unavailable. Please try again shortly.',
	error: 'database_unavailable'
};

describe('apiFailure', () => {
	test('a database outage says the database is unavailable and to try again shortly', () => {
		const f = apiFailure(503, outage, 'Not found.');
		assert.deepEqual(f, { status: 503, message: DATABASE_UNAVAILABLE, kind: 'database' });
		assert.match(f.message, /database .*is unavailable/);
		assert.match(f.message, /try again shortly/);
		assert.doesNotMatch(f.message, /HTTP/);
		assert.equal(errorTitle(f.status, f.kind), 'The database is unavailable');
	});

	test('another 503 (no body, or not the database) says the API is unavailable', () => {
		for (const body of [null, {}, { detail: 'busy' }, { error: 'other' }, 'database_unavailable']) {
			assert.deepEqual(apiFailure(503, body, 'Not found.'), { status: 503, message: API_UNAVAILABLE });
		}
		assert.equal(errorTitle(503), 'The innercontext API is unreachable');
	});

	test('a 404 is the caller’s not-found message', () => {
		assert.deepEqual(apiFailure(404, null, 'Product not found.'), {
			status: 404,
			message: 'Product not found.'
		});
	});

	test('any other error is a bad gateway naming the API’s status', () => {
		const f = apiFailure(500, { detail: 'Internal Server Error' }, 'Not found.');
		assert.equal(f.status, 502);
		assert.equal(f.message, 'The innercontext API answered with an error (HTTP 500).');
		assert.equal(errorTitle(f.status), 'The innercontext API is not working');
	});
});

// Unit tests of the one resend after a connection failure (an API restart closing idle
// connections under a request).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resendable, withOneResend } from './retry.ts';

const reset = () => new TypeError('fetch failed', { cause: new Error('other side closed') });
const timeout = () => new DOMException('The operation was aborted due to timeout', 'TimeoutError');

/** An attempt that throws the given values in turn, then answers 'ok'; and its call count. */
function attempts(...failures: unknown[]) {
	let calls = 0;
	const attempt = async () => {
		calls += 1;
		const failure = failures.shift();
		if (failure !== undefined) throw failure;
		return 'ok';
	};
	return { attempt, calls: () => calls };
}

describe('resendable', () => {
	test('a connection failure of a GET or HEAD', () => {
		assert.equal(resendable('GET', reset()), true);
		assert.equal(resendable('head', reset()), true);
	});

	test('never a request that may change data', () => {
		for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
			assert.equal(resendable(method, reset()), false, method);
		}
	});

	test('never a timeout or an abort, nor anything but a network failure', () => {
		assert.equal(resendable('GET', timeout()), false);
		assert.equal(resendable('GET', new DOMException('aborted', 'AbortError')), false);
		assert.equal(resendable('GET', new Error('bug')), false);
	});
});

describe('withOneResend', () => {
	test('a GET whose connection was closed under it is sent again, once', async () => {
		const a = attempts(reset());
		assert.equal(await withOneResend('GET', a.attempt), 'ok');
		assert.equal(a.calls(), 2);
	});

	test('a second connection failure is the answer', async () => {
		const a = attempts(reset(), reset());
		await assert.rejects(withOneResend('GET', a.attempt), TypeError);
		assert.equal(a.calls(), 2);
	});

	test('a POST is sent once, whatever happened', async () => {
		const a = attempts(reset());
		await assert.rejects(withOneResend('POST', a.attempt), TypeError);
		assert.equal(a.calls(), 1);
	});

	test('a timed-out GET is not sent again', async () => {
		const a = attempts(timeout());
		await assert.rejects(withOneResend('GET', a.attempt), /timeout/);
		assert.equal(a.calls(), 1);
	});

	test('a success is not repeated', async () => {
		const a = attempts();
		assert.equal(await withOneResend('GET', a.attempt), 'ok');
		assert.equal(a.calls(), 1);
	});
});

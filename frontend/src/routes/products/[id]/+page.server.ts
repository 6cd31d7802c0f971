import { error } from '@sveltejs/kit';
import { listPrices, listProducts } from '#lib/server/api.ts';
import type { PageServerLoad } from './$types';

export const load: PageServerLoad = async ({ params, fetch }) => {
	const id = /^[1-9]\d{0,15}$/.test(params.id) ? Number(params.id) : NaN;
	if (!Number.isSafeInteger(id)) error(404, 'Product not found.');

	// The API has no single-product endpoint, so the product comes from the list.
	const [products, prices] = await Promise.all([listProducts(fetch), listPrices(fetch, id)]);
	const product = products.find((p) => p.id === id);
	if (!product) error(404, 'Product not found.');

	const history = [...prices].sort((a, b) => b.observed_at.localeCompare(a.observed_at));
	return { product, prices: history };
};
